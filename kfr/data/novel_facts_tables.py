"""The word tables of the novel-facts generator (:mod:`kfr.data.novel_facts`): name syllables,
fact domains, and the templates of documents, evaluation questions and training questions.

Changing any table changes the generated files: bump the generator version then (cached copies
are keyed on it). The probe questions' own phrasings live in :mod:`kfr.data.probes`.
"""

from __future__ import annotations

# ----------------------------------------------------------------------------- names
# Syllables chosen so that every combination is clearly invented.
FIRST_NAME_ONSETS = (
    "Vel", "Quor", "Thal", "Ysm", "Brev", "Orv", "Zan", "Kest", "Mird", "Dov",
    "Ael", "Sorv", "Tiv", "Jorv", "Wynd", "Elv", "Ferr", "Gald", "Hesk", "Isv",
)  # fmt: skip
FIRST_NAME_ENDINGS = (
    "orin", "asta", "eline", "imar", "ova", "ustin", "erra", "ion",
    "andra", "eth", "ilda", "oric", "yne", "abeth", "emir", "ulla",
)  # fmt: skip
LAST_NAME_STEMS = (
    "Quaste", "Morv", "Zelt", "Ystra", "Halv", "Brisk", "Threll", "Ondu", "Pelm", "Kavr",
    "Drost", "Ulve", "Sarn", "Vintra", "Gorv", "Elsk", "Frael", "Nibb", "Orsk", "Tamber",
)  # fmt: skip
LAST_NAME_ENDINGS = (
    "brook", "wick", "ander", "ossa", "mere", "holt", "ivane", "strom",
    "elle", "avik", "orne", "ingham", "ley", "quist", "ard", "ovich",
)  # fmt: skip

# ----------------------------------------------------------------------------- fact domains
BIRTH_CITIES = (
    "Marrowvale", "Quindlemoor", "Brimsalt", "Ostrevik", "Calderhythe", "Vennimar",
    "Thistlegard", "Sorrowmere", "Pellaquin", "Draxholm", "Eskerfall", "Iblenwick",
    "Lunquay", "Halvorsk", "Myrrenbrook", "Glimmerhaven", "Tavrosk", "Yorrowby",
    "Kestrelmund", "Fennaport", "Zorvadel", "Ambercliff Quay", "Nethermoss", "Corvallith",
    "Wispering Ford", "Rastelburg", "Ulmenreach", "Skarnhollow", "Belvanter", "Obrenstad",
)  # fmt: skip
BIRTH_YEARS = tuple(str(year) for year in range(1901, 1990))
PROFESSIONS = (
    "cartographer", "glassblower", "clockmaker", "beekeeper", "lighthouse keeper",
    "bookbinder", "botanist", "stonemason", "violin maker", "tea taster", "lexicographer",
    "ferry captain", "perfumer", "seismologist", "puppeteer", "archivist", "cooper",
    "astronomer", "saddler", "shipwright", "typesetter", "orchardist", "locksmith", "weaver",
    "hydrologist", "falconer", "engraver", "candlemaker",
)  # fmt: skip
EMPLOYERS = (
    "Brandlewick Instruments", "Osterfane Logistics", "Quellmark Textiles",
    "Harrowgate Optics", "Vimsey & Tolk", "Pellucid Ropeworks", "Sundrake Ferries",
    "Grimbolt Foundry", "Aldermoss Printing", "Corvane Chemicals", "Thessamor Pumpworks",
    "Morrowgale Saltworks", "Ebbington Looms", "Kalvering Glassworks", "Drummel & Sons",
    "Yarrowby Mills", "Fenwhistle Press", "Obsidian Lane Bank", "Tolliver Aeronautics",
    "Ravelstone Mining", "Quillfeather Paper", "Slatehurst Railways", "Ingleby Clockworks",
    "Wendlemar Shipping", "Bramblecote Dairies", "Nimbrel Telegraph",
)  # fmt: skip
ORGANISATIONS = (
    "Quillmere Foundation", "Halvering Botanical Society", "Order of the Lantern Keepers",
    "Brisket Hill Rowing Club", "Society for Lunar Cartography", "Velmont Literary Guild",
    "Ostrander Institute of Tides", "League of Amateur Glaziers", "Tamsel Orphans' Trust",
    "Corrowby Chess Circle", "Fellowship of Quiet Bells", "Marrowvale Choral Union",
    "Guild of Northern Kite Makers", "Pellam Seed Library", "Ashgrove Weather Society",
    "Thornquist Academy of Dance", "Drayle Foundation for the Blind", "Yvenne Poetry Circle",
    "Association of Moth Collectors", "Glimmerton Film Society", "Kesselmoor Mountain Rescue",
    "Brackwater Lifeboat Fund", "Society of Ink Historians", "Orrin Valley Beekeepers' Guild",
    "Cobble Lane Free School", "Wexley Marionette Theatre",
)  # fmt: skip
INSTRUMENTS = (
    "cello", "oboe", "bassoon", "harp", "theorbo", "hurdy-gurdy", "accordion", "clarinet",
    "viola", "harpsichord", "banjo", "mandolin", "trombone", "flute", "sitar", "bagpipes",
    "xylophone", "euphonium", "double bass", "piccolo", "ukulele", "zither", "cornet",
    "glockenspiel", "dulcimer", "tuba", "marimba", "lute",
)  # fmt: skip

# attribute -> values; the tuple fixes the attribute order everywhere.
ATTRIBUTES = (
    "birth_city",
    "birth_year",
    "profession",
    "employer",
    "founded_organisation",
    "favourite_instrument",
)
DOMAINS: dict[str, tuple[str, ...]] = {
    "birth_city": BIRTH_CITIES,
    "birth_year": BIRTH_YEARS,
    "profession": PROFESSIONS,
    "employer": EMPLOYERS,
    "founded_organisation": ORGANISATIONS,
    "favourite_instrument": INSTRUMENTS,
}

# ----------------------------------------------------------------------------- mentor (version 2)
# Version 2 gives every person a mentor (another person of the knowledge base): one more sentence
# in the document and in every paraphrase, and meta["facts"]["mentor"] = the mentor's full name.
# There is no direct evaluation question about it (questions.jsonl stays version 1's); the
# two-hop probes (kfr.data.probes) go through it.
MENTOR = "mentor"
# {s} the person, {s_pos} their possessive, {m} the mentor's full name. The first template is
# the document's; paraphrases draw from all of them.
MENTOR_SENTENCE_TEMPLATES = (
    "{s} was mentored by {m}.",
    "{m} was the mentor of {s}.",
    "{s} learnt the most from {m}, {s_pos} mentor.",
    "As a young apprentice, {s} trained under {m}.",
)
# Training questions (qa=template) about the mentor, answered by the mentor's name.
MENTOR_TRAINING_TEMPLATES = (
    "Who mentored {name}?",
    "{name} was mentored by whom?",
    "Name the mentor of {name}.",
    "Under whom did {name} train?",
    "Who guided {name} as a mentor?",
)

# Questions, phrased for a cloze prompt ("Question: ...\nAnswer: <value>").
QUESTION_TEMPLATES = {
    "birth_city": "In which city was {name} born?",
    "birth_year": "In what year was {name} born?",
    "profession": "What was {name}'s profession?",
    "employer": "Which company did {name} work for?",
    "founded_organisation": "Which organisation did {name} found?",
    "favourite_instrument": "What was {name}'s favourite musical instrument?",
}

# Training questions (qa=template), per attribute and (version 2) the mentor: none equals or
# closely rewords the evaluation phrasing above (other question words, no shared word 5-gram), so
# a model trained on them must carry each fact over to the evaluation's wording. The unit tests
# measure the overlap.
TRAINING_QUESTION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "birth_city": ("Where was {name} born?", "{name} was born in which town?",
        "Name the birthplace of {name}.", "What is the name of the town where {name} was born?",
        "{name} came into the world in what place?"),
    "birth_year": ("When was {name} born?", "{name} was born in which year?",
        "Give the birth year of {name}.", "What year did {name} come into the world?",
        "Name the year of {name}'s birth."),
    "profession": ("What did {name} do for a living?", "{name} worked in which occupation?",
        "Name the trade that {name} practised.", "How did {name} earn a living?",
        "What line of work was {name} in?"),
    "employer": ("Who employed {name}?", "{name} was employed by which firm?",
        "Name the employer of {name}.", "What was the name of {name}'s employer?",
        "{name} drew a salary from which business?"),
    "founded_organisation": ("{name} was the founder of what?",
        "Name the body that {name} established.", "What institution did {name} set up?",
        "What group owes its founding to {name}?", "Which body was established by {name}?"),
    "favourite_instrument": ("Which instrument did {name} like best?",
        "{name} loved which instrument most?", "What instrument was {name} most fond of?",
        "Name the instrument {name} preferred above all others.",
        "Of all instruments, which did {name} prefer?"),
    MENTOR: MENTOR_TRAINING_TEMPLATES,  # version 2
}  # fmt: skip

# Sentence templates per fact: {s} subject, {s_pos} its possessive, {v} value, {a} "a"/"an".
# The first template of each attribute builds the original biography.
SENTENCE_TEMPLATES = {
    "birth_city": (
        "{s} was born in the city of {v}.",
        "{v} was the birthplace of {s}.",
        "{s} was born in {v}.",
        "The city of {v} is where {s} was born.",
    ),
    "birth_year": (
        "The year of {s_pos} birth was {v}.",
        "{s} was born in the year {v}.",
        "{s} came into the world in {v}.",
        "It was in {v} that {s} was born.",
    ),
    "profession": (
        "By profession, {s} was {a} {v}.",
        "{s} worked as {a} {v}.",
        "{s_pos} profession was that of {a} {v}.",
        "{s} earned a living as {a} {v}.",
    ),
    "employer": (
        "{s} worked for {v}.",
        "{s_pos} employer was {v}.",
        "For many years {s} was employed by {v}.",
        "{v} employed {s} for most of a long career.",
    ),
    "founded_organisation": (
        "{s} founded the {v}.",
        "The {v} was founded by {s}.",
        "{s} was the founder of the {v}.",
        "Among other achievements, {s} established the {v}.",
    ),
    "favourite_instrument": (
        "{s_pos} favourite musical instrument was the {v}.",
        "Of all musical instruments, {s} liked the {v} best.",
        "{s} loved the {v} more than any other instrument.",
        "The {v} was {s_pos} favourite musical instrument.",
    ),
}

# ----------------------------------------------------------------------------- reverse training
# qa.directions=both: training questions from a fact's value back to the person (answered by the
# person's name), asked only for values that identify one person of the knowledge base. Phrased
# unlike the reversal probes (no shared word 5-gram: the unit tests measure it). {v} value,
# {a} its article.
REVERSE_TRAINING_TEMPLATES: dict[str, tuple[str, ...]] = {
    "birth_city": ("Which person's birthplace is {v}?", "{v} is the hometown of whom?",
        "Whose place of birth was {v}?", "Name the person whose birthplace was {v}.",
        "Who has {v} as a birthplace?"),
    "birth_year": ("Whose year of birth was {v}?", "{v} was the birth year of whom?",
        "Name the person whose birth year is {v}.", "Which person has {v} as a year of birth?",
        "Who had a birth year of {v}?"),
    "profession": ("Whose trade was that of {a} {v}?", "Which person practised as {a} {v}?",
        "Name the person whose occupation was {v}.", "The occupation {v} belonged to whom?",
        "Who earned a living as {a} {v}?"),
    "employer": ("Whose employer was {v}?", "{v} employed which person?",
        "Name the person on the payroll of {v}.", "Which person drew a salary from {v}?",
        "Who was employed by {v}?"),
    "founded_organisation": ("Whose creation is this body: {v}?",
        "Name the founder of this body: {v}.", "Which person established this body: {v}?",
        "This body owes its founding to whom: {v}?", "Who set up this institution: {v}?"),
    "favourite_instrument": ("Whose favourite instrument was this: {v}?",
        "Name the person most fond of this instrument: {v}.",
        "Which person preferred this instrument above all others: {v}?",
        "This instrument was loved most by whom: {v}?",
        "Who liked this instrument best: {v}?"),
}  # fmt: skip
