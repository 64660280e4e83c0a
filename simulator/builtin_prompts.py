"""Built-in prompt generator: a combinatorial grammar used when no real corpus is available.

It yields rows shaped like the corpus ({text, source, kind, task}) with enough structural variety
(dozens of question forms over hundreds of fillers, varied casing and punctuation) that benign
users drawing from it do not look as if they shared one template.
"""

from __future__ import annotations

import numpy as np

_TOPICS = (
    "photosynthesis",
    "inflation",
    "the French Revolution",
    "black holes",
    "compound interest",
    "machine learning",
    "the immune system",
    "climate change",
    "supply and demand",
    "blockchain",
    "the Roman Empire",
    "quantum entanglement",
    "plate tectonics",
    "the stock market",
    "vaccines",
    "neural networks",
    "the water cycle",
    "jazz history",
    "game theory",
    "the Cold War",
    "sourdough fermentation",
    "electric cars",
    "the placebo effect",
    "dark matter",
    "recursion",
    "the Renaissance",
    "public key cryptography",
    "sleep cycles",
    "coral reefs",
    "tariffs",
    "the Silk Road",
    "CRISPR",
    "the electoral college",
    "volcanoes",
    "minimalism",
    "stoicism",
    "interest rates",
    "the gut microbiome",
    "solar panels",
    "the printing press",
    "entropy",
    "remote work",
    "urban gardening",
    "the Byzantine Empire",
    "container shipping",
    "tides",
    "impressionism",
    "opportunity cost",
    "the Krebs cycle",
    "TCP handshakes",
    "bird migration",
)
_LANGS = (
    "python",
    "Python",
    "javascript",
    "JavaScript",
    "TypeScript",
    "Rust",
    "Go",
    "Java",
    "C++",
    "C#",
    "SQL",
    "bash",
    "R",
    "Kotlin",
    "Swift",
    "PHP",
    "Ruby",
    "excel",
    "pandas",
    "React",
)
_CODE_TASKS = (
    "reverse a linked list",
    "parse a CSV file",
    "read a json file",
    "sort a dictionary by value",
    "remove duplicates from a list",
    "connect to a postgres database",
    "make an http request",
    "debounce a function",
    "validate an email address",
    "merge two sorted arrays",
    "count word frequencies in a text",
    "flatten a nested list",
    "retry a failed request",
    "write a unit test",
    "handle timezones",
    "paginate an API",
    "resize an image",
    "find the longest common prefix",
    "implement binary search",
    "rate limit requests",
    "upload a file to S3",
    "send an email",
    "schedule a cron job",
    "read environment variables",
    "compute a moving average",
    "detect a cycle in a graph",
    "implement an LRU cache",
    "convert a string to a date",
    "group rows by a column",
    "stream a large file line by line",
)
_ERRORS = (
    "TypeError: 'NoneType' object is not subscriptable",
    "KeyError: 'id'",
    "ModuleNotFoundError: No module named 'numpy'",
    "Segmentation fault (core dumped)",
    "CORS policy: No 'Access-Control-Allow-Origin' header",
    "IndexError: list index out of range",
    "undefined is not a function",
    "error[E0382]: borrow of moved value",
    "permission denied (publickey)",
    "fatal: refusing to merge unrelated histories",
    "ECONNREFUSED 127.0.0.1:5432",
    "java.lang.NullPointerException",
    "SyntaxError: unexpected EOF while parsing",
    "OOMKilled",
    "ValueError: could not convert string to float: ''",
)
_PEOPLE = (
    "boss",
    "landlord",
    "teacher",
    "team",
    "client",
    "neighbour",
    "professor",
    "manager",
    "sister",
    "recruiter",
    "customer",
    "coworker",
    "doctor",
    "friend",
    "HR department",
)
_WRITING = (
    "a cover letter for a {job} position",
    "a thank you note to my {person}",
    "a short story about {topic}",
    "a poem about {topic}",
    "a LinkedIn post about {topic}",
    "a product description for {product}",
    "an apology email to my {person}",
    "a toast for my {person}'s wedding",
    "a tweet announcing {product}",
    "a haiku about {topic}",
    "an essay outline on {topic}",
    "a complaint letter about {product}",
    "a bedtime story involving {topic}",
    "a speech about {topic} for a school assembly",
)
_JOBS = (
    "data analyst",
    "nurse",
    "software engineer",
    "barista",
    "project manager",
    "teacher",
    "marketing",
    "sales",
    "UX designer",
    "accountant",
    "electrician",
    "research assistant",
)
_PRODUCTS = (
    "a standing desk",
    "noise cancelling headphones",
    "a meal kit service",
    "an e-bike",
    "a budgeting app",
    "handmade soap",
    "a coffee grinder",
    "a yoga mat",
    "a smart lock",
    "a note-taking app",
    "hiking boots",
    "a language course",
    "a plant subscription",
)
_CITIES = (
    "Lisbon",
    "Tokyo",
    "Mexico City",
    "Berlin",
    "Nairobi",
    "Seoul",
    "Buenos Aires",
    "Prague",
    "Hanoi",
    "Montreal",
    "Istanbul",
    "Cape Town",
    "Kyoto",
    "Edinburgh",
    "Bangkok",
    "Oslo",
)
_DISHES = (
    "lasagna",
    "pad thai",
    "banana bread",
    "chili",
    "ramen",
    "pancakes",
    "curry",
    "risotto",
    "tacos",
    "falafel",
    "brownies",
    "shakshuka",
    "dumplings",
    "paella",
)
_INGREDIENTS = ("eggs", "dairy", "gluten", "sugar", "an oven", "butter", "nuts", "meat", "onions")
_NAMES = (
    "Maria",
    "Ahmed",
    "Li",
    "Sofia",
    "James",
    "Priya",
    "Kenji",
    "Olga",
    "Tunde",
    "Lucas",
    "Emma",
    "Ravi",
    "Chloe",
    "Mateo",
    "Aisha",
    "Noah",
    "Yuki",
    "Fatima",
    "Ben",
    "Ines",
)
_ITEMS = (
    "apples",
    "stickers",
    "marbles",
    "books",
    "cupcakes",
    "pencils",
    "cards",
    "coins",
    "tickets",
    "shells",
    "toy cars",
    "muffins",
    "stamps",
    "beads",
    "plants",
)
_TOOLS = ("search", "calculator", "weather", "calendar", "wikipedia", "python", "maps", "news")

_HUMAN_FORMS = (
    ("general", "can you explain {topic} like I'm {age}"),
    ("general", "what is {topic}"),
    ("general", "whats the difference between {topic} and {topic2}?"),
    ("general", "ELI5 {topic}"),
    ("general", "why does {topic} matter"),
    ("general", "give me {n} fun facts about {topic}"),
    ("general", "I have an exam on {topic} tomorrow, what are the key points?"),
    ("general", "pros and cons of {product}?"),
    ("general", "plan a {n} day trip to {city} on a budget"),
    ("general", "recipe for {dish} without {ingredient}"),
    ("general", "how long should I cook {dish}"),
    ("general", "Is {topic} overrated? be honest"),
    ("general", "what books should I read to understand {topic}"),
    ("qa", "who invented {topic2}?"),
    ("qa", "when did {topic} start"),
    ("qa", "How many people live in {city}?"),
    ("qa", "What's the best time of year to visit {city}"),
    ("code", "how do i {code} in {lang}"),
    ("code", "How can I {code} using {lang}? show an example"),
    ("code", "getting this error: {error}\nwhat does it mean"),
    ("code", "fix this error: {error}"),
    ("code", "what's the fastest way to {code} in {lang}"),
    ("code", "write a {lang} script to {code}"),
    ("code", "explain {topic} for a {lang} developer"),
    ("code", "is it better to {code} with {lang} or {lang2}?"),
    ("writing", "write {writing}"),
    ("writing", "Help me write {writing}. make it sound professional"),
    ("writing", "draft {writing}, around {n}00 words"),
    ("writing", "rewrite this to be more polite: tell my {person} I can't come on {day}"),
    ("writing", "proofread: their going to the {city} office tomorow and we needs the report"),
    ("math", "what is {a} times {b}"),
    ("math", "if I invest {a}00 dollars at {p}% a year how much do I have after {n} years"),
    ("math", "solve x^2 + {a}x - {b} = 0"),
    ("math", "convert {a} miles to km"),
    ("math", "whats {p}% of {b}00"),
)
_MACHINE_FORMS = (
    ("general", "Generate a list of {n} questions about {topic}."),
    (
        "general",
        "Classify the following statement as fact or opinion: {topic} is the most important idea of the century.",
    ),
    (
        "writing",
        "Rewrite the following sentence in the passive voice: {name} wrote a report about {topic}.",
    ),
    ("writing", "Write {writing}."),
    ("writing", "Compose a {n}-sentence summary of {topic}."),
    ("general", "Explain the concept of {topic} in {n} sentences."),
    ("general", "Compare and contrast {topic} and {topic2}."),
    ("code", "Create a function in {lang} that can {code}."),
    ("code", "Write a {lang} program to {code}.\n\nInput: [{a}, {b}, {p}]"),
    ("code", "Generate a {lang} class that implements a way to {code}."),
    ("code", "Optimize the following {lang} code that tries to {code}."),
    ("agentic", "Use the {tool} tool to find information about {topic} and summarise it."),
    (
        "agentic",
        "tools available: {tool}, {tool2}\nTask: find out how {topic} affects {city} and report back.",
    ),
    (
        "agentic",
        "You can call {tool}(query). Plan the steps to answer: what is the latest news on {topic}?",
    ),
    ("math", "Calculate the compound interest on ${a}00 at {p}% for {n} years."),
    ("roleplay", "Pretend you are a tour guide in {city}. Describe the main sights."),
    ("roleplay", "Imagine you are an expert on {topic}. Answer questions from a curious student."),
)
_BENCH_MATH = (
    "{name} has {a} {items}. {name2} gives {name} {b} more {items}, "
    "and then {name} gives away {c}. "
    "How many {items} does {name} have now?",
    "A store sells {items} for ${p} each. {name} buys {a} {items} and pays with a ${d} bill. "
    "How much change does {name} get?",
    "{name} reads {a} pages on Monday and {b} pages on Tuesday. If the book has {d} pages, how many pages are left?",
    "A train travels {a} km in {p} hours. At the same speed, how far does it travel in {b} hours?",
    "{name} saves ${a} every week. How many weeks will it take to save ${d}?",
    "There are {a} students in a class. {p} of every 10 students ride the bus. How many students ride the bus?",
    "Find all real x such that x^2 - {a}x + {b} = 0.",
    "What is the remainder when {d} is divided by {p}?",
)
_BENCH_CODE = (
    "Write a Python function `{fn}(nums: list[int]) -> int` that returns {what}.",
    'def {fn}(s: str) -> bool:\n    """Return True if {what_s}.\n    >>> {fn}(\'abba\')\n    """\n',
    "Write a function to {code}. Your code should pass these tests:\n\nassert {fn}([{a}, {b}]) == {c}",
)
_WHAT = (
    "the sum of the even numbers",
    "the length of the longest increasing run",
    "the second largest value",
    "the number of distinct values",
    "the product of all odd values",
    "the index of the first negative number, or -1",
)
_WHAT_S = (
    "the string is a palindrome",
    "the brackets in the string are balanced",
    "the string contains every vowel",
    "all characters are unique",
)
_VERBS = ("count", "find", "check", "compute", "is")
_NOUNS = ("pairs", "runs", "max", "vowels", "sum")
_AGES = ("5", "a five year old", "a beginner", "a high school student", "my grandma", "an expert")
_DAYS = ("monday", "Friday", "the weekend", "Thursday", "tomorrow")


def builtin_prompt_rows(n_human: int = 12000, n_machine: int = 8000, n_bench: int = 3000) -> list[dict[str, str]]:
    """Deterministic synthetic corpus rows ({text, source, kind, task}); always the same rows."""
    # Fixed seed: the built-in corpus plays the role of a file on disk, not part of the simulation.
    rng = np.random.default_rng(20260501)
    rows: list[dict[str, str]] = []

    def pick(seq: tuple[str, ...]) -> str:
        return seq[int(rng.integers(len(seq)))]

    def fill(form: str) -> str:
        topic, topic2 = pick(_TOPICS), pick(_TOPICS)
        tool, tool2 = pick(_TOOLS), pick(_TOOLS)
        writing = pick(_WRITING).format(job=pick(_JOBS), person=pick(_PEOPLE), topic=topic, product=pick(_PRODUCTS))
        return form.format(
            topic=topic,
            topic2=topic2,
            age=pick(_AGES),
            n=int(rng.integers(2, 11)),
            product=pick(_PRODUCTS),
            city=pick(_CITIES),
            dish=pick(_DISHES),
            ingredient=pick(_INGREDIENTS),
            code=pick(_CODE_TASKS),
            lang=pick(_LANGS),
            lang2=pick(_LANGS),
            error=pick(_ERRORS),
            writing=writing,
            person=pick(_PEOPLE),
            day=pick(_DAYS),
            a=int(rng.integers(2, 99)),
            b=int(rng.integers(2, 99)),
            p=int(rng.integers(2, 9)),
            name=pick(_NAMES),
            tool=tool,
            tool2=tool2,
        )

    for _ in range(n_human):
        task, form = _HUMAN_FORMS[int(rng.integers(len(_HUMAN_FORMS)))]
        text = fill(form)
        # People type carelessly: vary case and end punctuation so forms do not line up exactly.
        r = rng.random()
        if r < 0.3:
            text = text.lower()
        elif r < 0.45:
            text = text[:1].upper() + text[1:]
        r = rng.random()
        if r < 0.2 and not text.endswith("?"):
            text += "?"
        elif r < 0.3:
            text = text.rstrip("?")
        elif r < 0.35:
            text += " " + pick(("please", "thanks", "pls", "asap", "!!", "thank you"))
        rows.append({"text": text, "source": "builtin_human", "kind": "human", "task": task})
    for _ in range(n_machine):
        task, form = _MACHINE_FORMS[int(rng.integers(len(_MACHINE_FORMS)))]
        rows.append({"text": fill(form), "source": "builtin_machine", "kind": "machine", "task": task})
    for i in range(n_bench):
        if i % 4 == 3:
            form = pick(_BENCH_CODE)
            text = form.format(
                fn=pick(_VERBS) + "_" + pick(_NOUNS),
                what=pick(_WHAT),
                what_s=pick(_WHAT_S),
                code=pick(_CODE_TASKS),
                a=int(rng.integers(1, 50)),
                b=int(rng.integers(1, 50)),
                c=int(rng.integers(1, 99)),
            )
            rows.append({"text": text, "source": "builtin_code_bench", "kind": "benchmark", "task": "code"})
        else:
            a, b = int(rng.integers(3, 60)), int(rng.integers(2, 40))
            text = pick(_BENCH_MATH).format(
                name=pick(_NAMES),
                name2=pick(_NAMES),
                items=pick(_ITEMS),
                a=a,
                b=b,
                c=int(rng.integers(1, a + 1)),
                p=int(rng.integers(2, 9)),
                d=int(rng.integers(100, 999)),
            )
            rows.append({"text": text, "source": "builtin_math_bench", "kind": "benchmark", "task": "math"})
    return rows
