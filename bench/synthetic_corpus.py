"""A synthetic labelled corpus of any size, with planted duplicates and noise, written as JSONL.

Of every 100 rows, about: 80 original texts (8-40 English words, one of three labels, a confidence), 5 exact
copies (case and spacing changed), 5 near copies (a word or two swapped), 2 paraphrases (a prefix, two
words transposed), 2 copies with the other label (conflicts), 2 too short, 1 symbol noise, 2 low confidence
and 1 broken JSON line. Copies point back into a bounded window of recent rows, so the generator's memory
does not grow with the corpus.
Usage: python bench/synthetic_corpus.py OUT.jsonl N [--seed S]
"""

from __future__ import annotations

import argparse
import json
import random
from collections import deque
from pathlib import Path

WORDS = (  # noqa: SIM905 - 400 words read better as text than as a list literal
    "account address answer apple area arm art baby back bag ball bank bed bill bird block board boat body "
    "book bottle box boy brain bread bridge brother budget building bus business button cake call camera "
    "car card care case cat cause cell chair chance change charge check child choice church city class "
    "clock cloud club coach coat coffee color company computer corner cost country course court cover cup "
    "customer cycle data date day deal death debt decision degree design desk detail device diet dinner "
    "direction doctor dog door dream dress drink driver earth economy edge effect egg energy engine evening "
    "event exam face fact family farm father fear field file film fire fish flight floor flower food foot "
    "force forest form friend fruit game garden gas gift girl glass goal gold government grass group growth "
    "guide hair hand head health heart heat hill history hole home horse hospital hotel hour house idea "
    "image income industry island job judge key kitchen knee lake land language law leader letter level "
    "library life light line list loan lunch machine manager map market meal meeting memory message metal "
    "method milk mind minute model money month morning mother mountain mouse movie music nation nature news "
    "night noise note number object ocean office oil order owner page pain paper parent park party patient "
    "payment peace pen person phone photo piano picture place plan plant plate player pocket poem police "
    "price problem product program project queen question radio rain rate reason record region report "
    "result river road rock role room rule safety salt school science screen sea season seat service shape "
    "ship shirt shoe shop side sign signal singer sister site size skill sky sleep smile snow song sound "
    "space speech sport spring staff stage star station step stock store story street student study style "
    "sugar summer sun support surface system table task tea teacher team test text theory thing ticket time "
    "tool tooth topic town track trade train tree trip truck user valley value video view village voice "
    "wall war water wave way weather week wheel window wine winter woman wood word work world writer year "
    "good bad great poor happy sad quick slow new old big small early late easy hard warm cold bright dark "
    "is was has had will can could would should makes takes gives finds keeps leaves brings holds turns "
    "and but or so because while after before when where with without into over under near"
).split()
LABELS = ("positive", "negative", "neutral")
WINDOW = 5000  # copies are drawn from this many recent originals


def rows(n: int, seed: int = 0):
    """`n` lines (JSON text, one per row, a broken one included), planted kinds mixed in at random."""
    rng = random.Random(seed)
    recent: deque[dict] = deque(maxlen=WINDOW)
    for _ in range(n):
        roll = rng.random() * 100
        if not recent or roll < 80:
            row = {"text": _sentence(rng), "label": rng.choice(LABELS), "confidence": round(rng.uniform(0.7, 1), 3)}
            recent.append(row)
        elif roll < 85:
            row = {**rng.choice(recent)}
            row["text"] = "  ".join(row["text"].upper().split()) if rng.random() < 0.5 else row["text"] + "  "
        elif roll < 90:
            row = {**rng.choice(recent)}
            words = row["text"].split()
            for _ in range(1 + len(words) // 25):
                words[rng.randrange(len(words))] = rng.choice(WORDS)
            row["text"] = " ".join(words)
        elif roll < 92:
            row = {**rng.choice(recent)}
            words = row["text"].split()
            k = rng.randrange(len(words) - 1)
            words[k], words[k + 1] = words[k + 1], words[k]
            row["text"] = "Note: " + " ".join(words)
        elif roll < 94:
            source = rng.choice(recent)
            row = {**source, "label": rng.choice([x for x in LABELS if x != source["label"]])}
        elif roll < 96:
            row = {"text": rng.choice(WORDS), "label": rng.choice(LABELS), "confidence": 0.9}
        elif roll < 97:
            row = {"text": "".join(rng.choice("#$%&*@!?~^") for _ in range(30)), "label": "neutral", "confidence": 0.9}
        elif roll < 99:
            row = {"text": _sentence(rng), "label": rng.choice(LABELS), "confidence": round(rng.uniform(0, 0.5), 3)}
        else:
            yield '{"text": "broken'
            continue
        yield json.dumps(row)


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40))).capitalize() + "."


def write_corpus(path: Path, n: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for line in rows(n, seed):
            fh.write(line + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("n", type=int)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_corpus(args.out, args.n, args.seed)


if __name__ == "__main__":
    main()
