"""Build the CLIP tokenizer parity fixtures in shared/cliptok/testdata.

Makes a fixed set of texts (seeded: ASCII captions, accents in composed and
decomposed form, CJK, Arabic and other scripts, emoji with ZWJ sequences,
punctuation runs, numbers, odd white space, HTML entities, texts of 1,000
characters, special tokens spelled out, random code points) and records
the ids that transformers' CLIPTokenizerFast gives each, padded and
truncated to 77, as CLIPProcessor asks. The Go tokenizer must give the
same ids for every one.

It also compares the slow CLIPTokenizer and open_clip's tokenizer with the
fast one on the same texts and writes where they disagree, by category,
with examples (docs/models.md quotes the counts).

Usage: python deploy/export/make_tokenizer_fixtures.py VOCAB_DIR OUT.json
VOCAB_DIR holds vocab.json and merges.txt (deploy/install/deps.sh clip-vocab).
"""

import argparse
import hashlib
import json
import os
import random
import sys

import open_clip
import tokenizers
import transformers
from transformers import CLIPTokenizer, CLIPTokenizerFast

CTX = 77
EOT = 49407

WORDS = ("photo picture image painting drawing sketch cat dog bird horse car truck bicycle boat tree flower "
         "mountain river beach city street building house kitchen bedroom table chair person man woman child "
         "group people sunset night snow rain field forest desert bridge train plane pizza cake bowl cup").split()
ADJS = "red blue green small large old young happy wooden shiny blurry dark bright empty busy tall".split()
PREPS = "on in under near beside behind with at over".split()
PLACES = "table grass road sand water sky floor wall window park kitchen".split()

ACCENTED = ["café", "naïve", "résumé", "jalapeño", "Ærøskøbing", "straße", "Zürich", "São Paulo", "Dvořák",
            "Łódź", "façade", "crème brûlée", "El Niño", "Åland", "Þingvellir", "Ōsaka", "Việt Nam", "ĞÜŞİÖÇ"]
SCRIPTS = ["一只猫坐在桌子上", "東京タワーの写真", "고양이 사진", "ひらがなとカタカナ", "漢字と仮名",
           "صورة قطة على الطاولة", "مرحبا بالعالم", "שלום עולם", "एक बिल्ली की तस्वीर", "แมวนั่งบนโต๊ะ",
           "Кошка на столе", "ΣΟΦΙΑ σοφίας ΌΣΟΣ", "İstanbul ıIiİ", "Ελληνικά", "ქართული", "Հայերեն",
           "አማርኛ", "ᚠᚢᚦᚨᚱᚲ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𝐛𝐨𝐥𝐝 𝑖𝑡𝑎𝑙𝑖𝑐", "ﬁﬂ ligatures", "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ"]
EMOJI = ["🐱", "🐶🐕", "👩‍👩‍👧‍👦", "👨🏽‍💻", "🏳️‍🌈", "🇯🇵🇫🇷", "1️⃣#️⃣", "❤️", "🧑🏿‍🤝‍🧑🏻", "😀😃😄", "👍🏼",
         "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "☕️", "✨🌟⭐"]
PUNCT = ["!!!", "???", "...", "—", "–", "«»", "“quoted”", "‘single’", "(...)", "[x]", "{y}", "<tag>", "@#$%^&*",
         "~~~", "___", "---", "''", "\"\"", "¿¡", "§¶", "•·", "→←↑↓", "©®™", "°", "±×÷", "|/\\"]
CONTRACTIONS = ["don't", "it's", "we're", "they've", "I'm", "you'll", "he'd", "DON'T", "IT'S", "O'Neil",
                "rock'n'roll", "'s", "''s", "'tis", "ma'am", "y'all'd've", "it’s"]
NUMBERS = ["1,234.56", "3rd", "1e10", "2024-01-31", "12:30pm", "٣٤٥", "१२३", "½", "²³", "Ⅻ", "ⅷ", "①②",
           "0x1F", "-42", "+7", "3.14159", "100%", "$5", "€10", "１２３", "𝟙𝟚𝟛"]
SPACES = ["\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2028", "\u2029", "\u200b", "\u200d", "\ufeff", "\x1c",
          "\x1f", "\x0b", "\x0c", "\x85", "\u2009", "\u202f", "\u180e", "   ", "\u1680"]
ENTITIES = ["&amp;", "&lt;b&gt;", "&#39;", "&quot;", "&nbsp;", "&eacute;", "&#x1F600;", "&amp;amp;", "&copy;"]
SPECIAL = ["<|startoftext|>", "<|endoftext|>", "<|ENDOFTEXT|>", "<|EndOfText|>", "<|endoftext", "|endoftext|>",
           "<| endoftext |>", "<|startoftext|><|endoftext|>"]
CONTROLS = ["\x00", "\x01", "\x07", "\x1b[31m", "\x7f", "\u0000x", "\ufffd", "\ue000", "\U0010fffd"]
BLOCKS = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF),
          (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x1E00, 0x1FFF), (0x2000, 0x206F), (0x2100, 0x22FF),
          (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xFB00, 0xFB4F), (0xFF00, 0xFFEF),
          (0x1F300, 0x1FAFF), (0x1D400, 0x1D7FF), (0x10000, 0x1007F), (0xE0000, 0xE007F)]


def caption(r):
    return f"a {r.choice(['photo', 'picture', 'painting', 'close-up'])} of a {r.choice(ADJS)} {r.choice(WORDS)} " \
           f"{r.choice(PREPS)} the {r.choice(PLACES)}"


def soup(r, n):
    out = []
    for _ in range(n):
        lo, hi = r.choice(BLOCKS)
        out.append(chr(r.randint(lo, hi)))
    return "".join(out)


def mix(r, parts, k):
    return r.choice(["", " ", "  "]).join(r.choice(parts) for _ in range(k))


def texts():
    r = random.Random(20261202)
    cases = []

    def add(cat, t):
        cases.append((cat, t))

    for _ in range(400):
        t = caption(r)
        add("ascii", r.choice([t, t.capitalize(), t.upper(), t + ".", t.title()]))
    for _ in range(150):
        w = r.choice(ACCENTED)
        form = r.choice(["NFC", "NFD", "NFKD"])
        import unicodedata
        add("accents", unicodedata.normalize(form, f"{caption(r)} in {w}"))
    for _ in range(250):
        add("scripts", mix(r, SCRIPTS + WORDS, r.randint(1, 4)))
    for _ in range(150):
        add("emoji", mix(r, EMOJI + WORDS, r.randint(1, 5)))
    for _ in range(150):
        add("punctuation", mix(r, PUNCT + WORDS, r.randint(1, 6)))
    for _ in range(100):
        add("contractions", mix(r, CONTRACTIONS + WORDS, r.randint(1, 5)))
    for _ in range(150):
        add("numbers", mix(r, NUMBERS + WORDS, r.randint(1, 5)))
    for _ in range(150):
        parts = [r.choice(WORDS + ADJS) for _ in range(r.randint(1, 5))]
        t = "".join(p + "".join(r.choice(SPACES) for _ in range(r.randint(1, 3))) for p in parts)
        add("whitespace", r.choice(SPACES) + t)
    for _ in range(100):
        add("html", mix(r, ENTITIES + WORDS, r.randint(1, 5)))
    for _ in range(60):
        add("special", mix(r, SPECIAL + WORDS, r.randint(1, 4)))
    for _ in range(40):
        add("controls", mix(r, CONTROLS + WORDS, r.randint(1, 4)))
    for _ in range(100):
        kind = r.choice(["words", "soup", "mixed"])
        if kind == "words":
            t = " ".join(r.choice(WORDS + ADJS) for _ in range(200))
        elif kind == "soup":
            t = soup(r, 1000)
        else:
            t = mix(r, SCRIPTS + EMOJI + PUNCT + WORDS + NUMBERS, 200)
        add("long", t[:1000])
    for _ in range(300):
        add("random", soup(r, r.randint(1, 40)))
    for t in ["", " ", "\t\n", "a", "A", ".", "'", "0", "🐱"]:
        add("edge", t)
    return cases


def content(ids):
    """The ids before padding: everything up to the last non-pad token and
    the end token after it."""
    n = len(ids)
    while n > 0 and ids[n - 1] == EOT:
        n -= 1
    return list(ids[:n])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("vocab_dir")
    ap.add_argument("out")
    args = ap.parse_args()
    vocab, merges = (os.path.join(args.vocab_dir, f) for f in ("vocab.json", "merges.txt"))
    fast = CLIPTokenizerFast(vocab_file=vocab, merges_file=merges)
    slow = CLIPTokenizer(vocab_file=vocab, merges_file=merges)
    oc = open_clip.get_tokenizer("ViT-B-32")

    cases = texts()
    out, disagree = [], {"slow": {}, "open_clip": {}}
    examples = {"slow": [], "open_clip": []}
    for cat, t in cases:
        ids = fast(t, padding="max_length", max_length=CTX, truncation=True)["input_ids"]
        assert len(ids) == CTX, (t, len(ids))
        out.append({"category": cat, "text": t, "ids": content(ids)})
        s = slow(t, padding="max_length", max_length=CTX, truncation=True)["input_ids"]
        o = [int(x) for x in oc([t])[0].tolist()]
        o = [EOT if x == 0 else x for x in o]  # open_clip pads with 0
        for name, other in (("slow", s), ("open_clip", o)):
            if content(other) != content(ids):
                disagree[name][cat] = disagree[name].get(cat, 0) + 1
                if len(examples[name]) < 12:
                    examples[name].append({"text": t, "fast": content(ids), name: content(other)})
    sha = {f: hashlib.sha256(open(os.path.join(args.vocab_dir, f), "rb").read()).hexdigest()
           for f in ("vocab.json", "merges.txt")}
    by_cat = {}
    for cat, _ in cases:
        by_cat[cat] = by_cat.get(cat, 0) + 1
    doc = {
        "generator": "deploy/export/make_tokenizer_fixtures.py",
        "reference": f"transformers {transformers.__version__} CLIPTokenizerFast (tokenizers {tokenizers.__version__}), "
                     f"padding=max_length, max_length={CTX}, truncation=True; trailing <|endoftext|> ids (end and "
                     f"padding) are left out: pad with {EOT} to {CTX}",
        "vocab_sha256": sha,
        "context_length": CTX,
        "categories": by_cat,
        "disagreements_with_fast": {k: {"total": sum(v.values()), "by_category": v, "examples": examples[k]}
                                    for k, v in disagree.items()},
        "open_clip_version": open_clip.__version__,
        "cases": out,
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=0)
        f.write("\n")
    print(f"wrote {args.out}: {len(out)} texts; disagreements with the fast tokenizer: "
          + ", ".join(f"{k} {sum(v.values())} {dict(v)}" for k, v in disagree.items()), file=sys.stderr)


if __name__ == "__main__":
    main()
