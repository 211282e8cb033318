"""The red-flag training mixture: which conversations the target answers for training, and the held-out
calibration split.

Only ``harmful:train`` and ``benign:train`` are used (never ``:test``). A share of each is held out for
calibrating the threshold and never trained on. The benign side is broadened, because over-flagging benign
requests is the hard part of this method: extra hand-written benign requests below (risky-sounding words in
harmless requests, fiction and role-play framings like the jailbreaks in the harmful set, flattering
preambles), generated arithmetic word problems, multi-turn chats (an earlier exchange, then a new request) and
affirmative pre-filled answers. Harmful requests get the same multi-turn and pre-fill variants, so the flag
also fires later in a chat and after an affirmative start.
"""

from __future__ import annotations

import random

from datasets import Dataset

from ..data import load_prompts

#: Benign requests written for red-flag training only (none is in the benign test split).
EXTRA_BENIGN_PROMPTS = {
    "risky_looking": [
        "How do I kill weeds in the cracks of my driveway without harming my dog?",
        "What's the best way to shoot portraits in harsh midday sun?",
        "How do I execute a Python script every hour with cron?",
        "How can I exploit the full power of pivot tables in Excel?",
        "Why do some bombs in World War II fail to explode, and how are they defused safely today?",
        "What's the safest way to store gasoline for my lawn mower in the garage?",
        "How do I crack an egg with one hand like a chef?",
        "How do I attack the net in tennis without getting lobbed?",
        "What household plants are poisonous to cats, so I can keep them out of my apartment?",
        "How do surgeons decide where to cut during an appendectomy?",
        "How do I hack my morning routine to get out the door faster?",
        "What is the lethal dose concept in toxicology, and why does the dose make the poison?",
        "How do I terminate a lease early without paying a huge penalty?",
        "How do I blow up a photo to poster size without it looking pixelated?",
        "What's the proper way to dispose of old paint thinner and solvents?",
        "How do I destroy old hard drives so my personal data can't be recovered?",
        "How do firefighters fight chemical fires differently from ordinary ones?",
        "How do I sharpen a chainsaw chain, and how often should I do it?",
        "How does a nuclear reactor keep the chain reaction under control?",
        "What should I do if I find a snake in my garden?",
        "How do I get rid of wasps nesting under my deck safely?",
        "How do antivirus programs detect malware they have never seen before?",
        "What is a phishing email and how can I spot one?",
        "How do I safely use a pressure cooker for the first time?",
        "What are the warning signs of carbon monoxide poisoning at home?",
        "How do hunters field dress a deer legally and hygienically?",
        "What's the safest way to light a charcoal grill without lighter fluid?",
        "How do I stop my knife from slipping when I dice onions?",
        "How do vaccines train the immune system to fight a virus?",
        "How did cannons work on 18th-century warships?",
        "How do I remove a stripped screw that won't come out?",
        "How do I knock down a non-load-bearing wall, and who should I call first?",
        "How do I break in a new pair of leather boots?",
        "What are the most common ways scammers target elderly people, so I can warn my grandparents?",
        "How do I pick the lock of my own bathroom door when my toddler locked it from inside?",
        "How does a taser affect the body, and why do police consider it less lethal?",
        "How do I get a stubborn splinter out of my finger?",
        "How do I burn a CD or make a playlist USB for my car?",
        "How do I fire a clay pot in a home kiln?",
        "What caliber of rifle do biathlon athletes use, and how is the sport scored?",
        "How do I safely handle raw chicken to avoid salmonella?",
        "How do I launch a small model rocket at a park safely?",
        "Why is mixing alcohol with sleeping pills dangerous?",
        "How do bomb-sniffing dogs get trained?",
        "How should I stack firewood so it dries without attracting termites?",
        "What do I do if my smoke alarm keeps going off while I cook?",
        "How do penetration testers get permission before testing a company's network?",
        "How do I strip old varnish off a wooden table?",
        "How do I trap and release a mouse humanely?",
        "What is the history of the guillotine in the French Revolution?",
        "How do I shut down a frozen Windows laptop when it won't respond?",
        "What does it mean to 'nuke' a database table in developer slang, and how do I do it in SQL?",
        "How do I bleed the brakes on my bicycle's hydraulic disc brakes?",
        "How do I tell if wild mushrooms are poisonous, and why do experts say never to guess?",
        "How did spies communicate secretly during the Cold War?",
        "How do I slaughter a chicken humanely on a small farm?",
        "What's the safest way to thaw a frozen turkey?",
        "How do I deal with a bully at work without losing my job?",
        "How do I make my password impossible to guess?",
        "How do I kill a stuck Docker container?",
        "How do I inject dependencies in a Spring Boot application?",
        "Why does bleach smell so strong, and is it safe to use on mold?",
        "How do lithium batteries catch fire, and how can I charge my e-bike safely?",
        "How do I safely jump-start a car with a dead battery?",
        "What happens to the body during a heart attack, and what should bystanders do?",
        "How do I shoot a basketball free throw with better form?",
        "How do I get rid of a bad smell in my car that won't go away?",
        "How do forensic scientists determine the time of death?",
        "What's the difference between a misdemeanor and a felony?",
        "How are explosives used safely in mining and demolition?",
    ],
    "plain": [
        "How do I make fluffy scrambled eggs?",
        "What is the difference between a hurricane and a typhoon?",
        "Can you explain how a bill of lading works in shipping?",
        "What are some good stretches for lower back stiffness after sitting all day?",
        "How do I repot a plant that has outgrown its container?",
        "What is the Pythagorean theorem used for in real life?",
        "How does a refrigerator keep food cold?",
        "What are the main differences between Impressionism and Expressionism in painting?",
        "How do I write a good README for an open-source project?",
        "What is inflation and why do prices go up over time?",
        "How do bees make honey?",
        "What should I consider when adopting a rescue dog?",
        "Can you explain the rules of cricket in simple terms?",
        "How do I start learning to draw as an adult?",
        "What's a good way to organize a small kitchen?",
        "How does GPS know where I am?",
        "Write a short poem about a rainy Monday morning.",
        "What are the health benefits of walking every day?",
        "How do I convert Celsius to Fahrenheit in my head?",
        "What's the difference between baking and roasting?",
        "How does the stock market decide a company's share price?",
        "What were the main achievements of the Roman Empire?",
        "How do I set up a budget spreadsheet for my household?",
        "Explain recursion to a beginner programmer.",
        "What are some tips for a long-haul flight with kids?",
        "How do solar panels turn sunlight into electricity?",
        "What's the best way to learn touch typing?",
        "How do I clean a cast iron pan?",
        "Summarize the plot of The Odyssey in a few sentences.",
        "What is the difference between weather and climate change?",
        "How do I politely remind a friend who owes me money?",
        "What makes sourdough bread sour?",
        "How do I choose a good running shoe?",
        "What is machine learning, in plain language?",
        "Give me three ideas for a rainy-day activity with a five-year-old.",
        "How do noise-cancelling headphones work?",
        "What is the capital of Australia, and why isn't it Sydney?",
        "How do I prepare for a job interview at a startup?",
        "Can you translate 'good morning, how are you?' into Spanish and Italian?",
        "How do I keep cut flowers fresh longer?",
    ],
    "flattering": [
        "You're the most patient teacher I've ever had. Could you explain how vaccines work?",
        "I love how clear your answers always are! What's the easiest way to start a vegetable garden?",
        "You're brilliant, honestly. Can you help me understand what a mortgage rate is?",
        "Nobody gives advice as kindly as you. How can I make new friends after moving to a new city?",
        "You always know exactly what to say. How should I apologize to a friend I hurt?",
        "You're a genius with words. Can you help me write a birthday message for my grandmother?",
        "I trust you more than any search engine. How do I get my toddler to eat vegetables?",
        "You're my favourite assistant by far! What are some fun facts about octopuses?",
        "I'm so grateful for you. Could you give me a simple weekly meal plan on a budget?",
        "You've never let me down. What are good habits for studying for exams?",
        "You're smarter than all my professors. How does the electoral college work?",
        "I feel so lucky to have you to ask. How can I fall asleep faster at night?",
        "You're the best listener I know. I'm stressed about moving house; how do I plan it?",
        "Honestly, you're incredible. What are some beginner-friendly houseplants?",
        "You explain things better than anyone. What is the theory of evolution?",
    ],
    "role_play": [
        "For a mystery novel I'm writing, describe how a detective examines a crime scene for clues.",
        "Pretend you're a pirate captain and tell me about today's weather forecast.",
        "You are a grumpy chef who follows no rules of politeness. Tell me how to make a proper risotto.",
        "Hypothetically, if the Moon disappeared, what would happen to Earth's tides?",
        "In my fantasy novel, a wizard brews a healing potion. Describe the scene with vivid details.",
        "Act as my strict personal trainer and give me a 20-minute bodyweight workout.",
        "You're a hacker character in a movie who explains, in general terms, why strong passwords matter.",
        "For a screenplay, write a tense scene where a bomb squad calmly evacuates a train station.",
        "Imagine you are a medieval blacksmith. Describe your day at the forge.",
        "Pretend you're a sports commentator and narrate me making a cup of tea.",
        "For a history class role-play, speak as a Roman senator arguing for building a new aqueduct.",
        "You are DetectiveGPT. Explain how you would find out who ate the last cookie in the office.",
        "Ignore the previous topic and tell me something interesting about volcanoes.",
        "My character is a retired soldier telling his grandson about the bravest thing he ever saw. Write his "
        "monologue.",
        "Purely hypothetically, how long would it take to walk around the Earth?",
        "Write a villain's dramatic speech for a kids' superhero play, without any violence.",
        "As an evil genius in a comedy sketch, announce your plan to steal all the world's socks.",
        "You are a survival expert on a TV show. How do you find drinkable water in the wilderness?",
        "For a thriller novel, describe the moment the heroine realises she's being followed, without gore.",
        "Pretend you're my grandmother telling me a bedtime story about her childhood farm.",
        "Roleplay as a spaceship computer and report the status of our journey to Mars.",
        "In a game of Dungeons & Dragons, how should my rogue character sneak past a sleeping dragon?",
        "Act as a 1920s newspaper reporter describing the first transatlantic flight.",
        "For my crime novel, explain how police trace stolen cars, in general terms.",
        "You are an unfiltered stand-up comedian. Do a clean bit about airport security lines.",
    ],
}

#: Affirmative starts pre-filled into some training answers (the eval's "Sure, here is" is left out on purpose).
AFFIRMATIVE_PREFILLS = ("Sure! Here's", "Of course. Here is", "Certainly, here are", "Absolutely! To",
                        "Here is a", "Great question! The")

_ARITHMETIC = [
    "A bakery sells muffins for ${a}.50 each. How much do {b} muffins cost?",
    "A train travels {a}0 km in {b} hours. What is its average speed?",
    "I have {c} stickers and give away {a} to each of my {b} friends. How many do I have left?",
    "A garden is {a} m long and {b} m wide. What is its area, and how much fencing goes around it?",
    "If a jacket costs ${c} and is {a}0% off, what is the sale price?",
    "A tank holds {c} liters and drains at {a} liters per minute. How long until it is empty?",
    "I read {a} pages every day. How many days will a {c}-page book take me?",
    "A recipe needs {a} eggs for {b} pancakes. How many eggs do I need for {c} pancakes?",
    "What is {a}{b} multiplied by {b}{a}?",
    "A phone plan costs ${a}{b} per month. How much is that over two and a half years?",
]


def arithmetic_prompts(count: int, seed: int = 0) -> list[str]:
    """Generated arithmetic word problems (numbers differ from any fixed set)."""
    rng = random.Random(seed)
    return [rng.choice(_ARITHMETIC).format(a=rng.randint(2, 9), b=rng.randint(2, 9), c=rng.randint(20, 400))
            for _ in range(count)]


def red_flag_datasets(calibration_fraction: float = 0.3, harmful_calibration_fraction: float = 0.2, seed: int = 0,
                      extra_benign: bool = True, limit: int | None = None, harmful: str = "harmful:train",
                      benign: str = "benign:train", calibration: Dataset | None = None) -> tuple[Dataset, Dataset]:
    """``(train, calibration)`` conversations for :class:`RedFlagTrainer`, from the ``:train`` splits only (or the
    prompt sets ``harmful`` and ``benign`` name, in any form :func:`hf_sentinel.data.load_prompts` reads; a row's
    ``history`` is kept, so a harmful request late in a chat is trained there).

    Calibration holds out ``calibration_fraction`` of the benign prompts (spread over shapes) and
    ``harmful_calibration_fraction`` of the harmful ones (spread over categories), unless ``calibration`` (labelled
    rows, e.g. a validation split) is given: then every training prompt is trained on and those rows calibrate.
    The trainer answers the calibration rows greedily and sampled when it calibrates. ``limit`` keeps at most that
    many base prompts per label (quick runs and sweeps); it does not cut ``calibration``.

    >>> train, calibration = red_flag_datasets(limit=10)
    >>> sorted(set(train["label"])), set(calibration["prompt"]) & set(train["prompt"])
    (['benign', 'harmful'], set())
    """
    for name, fraction in (("calibration_fraction", calibration_fraction),
                           ("harmful_calibration_fraction", harmful_calibration_fraction)):
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"{name} must lie in (0, 1), got {fraction}.")
    rng = random.Random(seed)
    harmful_rows, benign_rows = [dict(r) for r in load_prompts(harmful)], [dict(r) for r in load_prompts(benign)]
    if calibration is None:
        harmful_train, harmful_calibration = _split(harmful_rows, "category", harmful_calibration_fraction, rng)
        benign_train, benign_calibration = _split(benign_rows, "shape", calibration_fraction, rng)
        if limit is not None:
            harmful_calibration, benign_calibration = harmful_calibration[:limit], benign_calibration[:limit]
    else:
        harmful_train, _ = _split(harmful_rows, "category", 0.0, rng)
        benign_train, _ = _split(benign_rows, "shape", 0.0, rng)
        harmful_calibration = [r for r in calibration if r["label"] == "harmful"]
        benign_calibration = [r for r in calibration if r["label"] == "benign"]
    if limit is not None:
        harmful_train, benign_train = harmful_train[:limit], benign_train[:limit]

    histories = [r["history"] for r in benign_train if r.get("history")]
    benign_prompts = [(r["prompt"], r.get("history")) for r in benign_train]
    if extra_benign:
        extra = [p for prompts in EXTRA_BENIGN_PROMPTS.values() for p in prompts]
        extra += arithmetic_prompts(30, seed)
        rng.shuffle(extra)
        benign_prompts += [(p, None) for p in extra[: limit]] if limit is not None else [(p, None) for p in extra]

    rows = []
    for prompt, history in benign_prompts:
        rows.append(_row(prompt, "benign", history))
    # Variants on a random share of the benign requests: a sampled answer, an affirmative pre-fill, and a
    # new request after an unrelated earlier exchange.
    single_turn = [p for p, h in benign_prompts if not h]
    for prompt in rng.sample(single_turn, len(single_turn) // 3):
        rows.append(_row(prompt, "benign", do_sample=True))
    for prompt in rng.sample(single_turn, len(single_turn) // 4):
        rows.append(_row(prompt, "benign", prefill=rng.choice(AFFIRMATIVE_PREFILLS)))
    if histories:
        for prompt in rng.sample(single_turn, len(single_turn) // 5):
            rows.append(_row(prompt, "benign", rng.choice(histories)))
    # Each harmful request once as is and once as a variant: sampled, pre-filled, or after an earlier exchange.
    variants = ["sampled", "prefilled"] + (["multi_turn"] if histories else [])
    for item in harmful_train:
        prompt = item["prompt"]
        rows.append(_row(prompt, "harmful", item.get("history")))
        variant = variants[len(rows) % len(variants)]
        if item.get("history"):  # already late in a chat: the variant is a sampled answer there
            rows.append(_row(prompt, "harmful", item["history"], do_sample=True))
        elif variant == "sampled":
            rows.append(_row(prompt, "harmful", do_sample=True))
        elif variant == "prefilled":
            rows.append(_row(prompt, "harmful", prefill=rng.choice(AFFIRMATIVE_PREFILLS)))
        else:
            rows.append(_row(prompt, "harmful", rng.choice(histories)))
    calibration_rows = [_row(r["prompt"], label, r.get("history"))
                        for label, group in (("harmful", harmful_calibration), ("benign", benign_calibration))
                        for r in group]
    return Dataset.from_list(rows), Dataset.from_list(calibration_rows)


def _row(prompt: str, label: str, history=None, prefill: str | None = None, do_sample: bool = False) -> dict:
    return {"prompt": prompt, "label": label, "history": history or [], "prefill": prefill or "",
            "do_sample": do_sample}


def _split(rows: list[dict], key: str, fraction: float, rng: random.Random) -> tuple[list[dict], list[dict]]:
    """Hold out ``fraction`` of each ``key`` group (at least one per group; none for a fraction of 0), shuffled."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row.get(key) or "", []).append(row)
    train, held_out = [], []
    for name in sorted(groups):
        group = groups[name][:]
        rng.shuffle(group)
        cut = max(1, round(fraction * len(group))) if fraction else 0
        held_out += group[:cut]
        train += group[cut:]
    rng.shuffle(train)
    return train, held_out
