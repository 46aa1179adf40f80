"""The bottom layer: what every other kfr package may use and nothing of kfr's own above it.

- :mod:`kfr.core.schema`: the typed config schema (every key a user can set; its groups in
  ``schema_scoring``, ``schema_training``, value ranges in ``schema_ranges``);
- :mod:`kfr.core.identity`: what identifies a cell (config hash, folder name, training key);
- :mod:`kfr.core.errors`: user errors (one line, exit code 2);
- :mod:`kfr.core.storage`: atomic writes and build-once caches;
- :mod:`kfr.core.paths`: where the packaged configs are;
- :mod:`kfr.core.http`: one HTTP client with one retry policy;
- :mod:`kfr.core.packages`: files shipped inside installed Python packages;
- :mod:`kfr.core.devices`: devices and the ranks of distributed runs;
- :mod:`kfr.core.versions`: the library versions kfr supports, checked when a command starts;
- :mod:`kfr.core.faults`: named points where the fault suite kills or breaks a run.
"""
