"""Retrieval-augmented generation: chunk the knowledge base, embed it, index it with FAISS.

Modules, in the order a cell uses them: ``chunking`` (documents -> token-bounded chunks),
``encoders`` (sentence-transformers embeddings), ``faiss_index`` (build and search indices, CPU
or GPU), ``search_tuning`` (each index's search breadth, tuned from the corpus), ``cache``
(embeddings and indices on disk, built once per sweep) and ``retrieve`` (top-K chunks per
question, recall, fitting chunks into the model's context). ``kfr.cli.index`` is the
``kfr-index`` command that builds an index ahead of a sweep.
"""
