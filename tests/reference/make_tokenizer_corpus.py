#!/usr/bin/env python3
"""Writes a deterministic multilingual JSONL corpus ({"text": ...} per line) for the tokenizer tests.

    python3 tests/reference/make_tokenizer_corpus.py OUT.jsonl [--mb 5] [--seed 1234]

Documents are seeded random mixtures of the word lists and snippets below (no downloads): English
prose with contractions in all cases, Chinese, Japanese, Korean (precomposed and as conjoining
jamo), Arabic, Hindi, Cyrillic, Thai, Greek, Vietnamese, code in several languages, emoji (ZWJ
families, skin tones, flags, keycaps), long digit runs, whitespace/newline/tab runs, text that
NFC changes (combining marks, singletons, out-of-order marks, composition exclusions) and the
special-token strings of Qwen (complete, broken and adjacent), and random code points from the
whole range (assigned in different Unicode versions, or not at all).
"""
import argparse
import json
import random

ENGLISH = (
    "the of and to in is was that for it with as his on be at by had are but from or have an they which "
    "one you were all we her she there would their will when who him been has more if no out so said what "
    "up its about than into them can only other time new some could these two may first then do any like "
    "my now over such our man me even most made after also did many before must through back years where "
    "much your way well down should because each just those people how too little state good very make "
    "world still own see men work long get here between both life being under never day same another "
    "know while last might us great old year off come since against go came right used take three "
    "tokenizer gradient optimizer checkpoint learning rate batch sequence attention transformer LoRA "
    "Qwen fine-tuning distributed cluster node GPU memory throughput latency benchmark dataset"
).split()
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'M", "'LL", "'D", "'Re", "'lL"]
PUNCT = [".", ",", "!", "?", ";", ":", "...", " -", " —", "(", ")", "\"", "'", "[", "]", "{", "}", "«", "»", "…", "’", "“", "”"]
CHINESE = ("的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面"
           "而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好"
           "应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命"
           "此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老"
           "头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处队南给色光门即"
           "保治北造百规热领七海口东导器压志世金增争济阶油思术极交受联什认六共权收证改清己美再采转更单风切打白教速花带安"
           "场身车例真务具万每目至达走积示议声报斗完类八离华名确才科张信马节话米整空元况今集温传土许步群广石记需段研界拉"
           "林律叫且究观越织装影算低持音众书布复容儿须际商非验连断深难近矿千周委素技备半办青省列习响约支般史感劳便团往酸"
           "历市克何除消构府称太准精值号率族维划选标写存候毛亲快效斯院查江型眼王按格养易置派层片始却专状育厂京识适属圆包"
           "火住调满县局照参红细引听该铁价严龙飞")
CHINESE_PUNCT = ["，", "。", "！", "？", "、", "；", "：", "（", "）", "《", "》", "「", "」", "——", "……"]
JAPANESE = ["こんにちは", "ありがとうございます", "東京", "日本語", "トークナイザー", "学習率", "です", "ます", "カタカナ",
            "ひらがな", "漢字", "機械学習", "の", "は", "が", "を", "に", "で", "と", "ｶﾀｶﾅ", "ガ", "パ", "ヴ"]
KOREAN = ["안녕하세요", "감사합니다", "한국어", "토크나이저", "학습", "데이터", "모델", "서울", "대한민국", "읽기", "값"]
ARABIC = ["مرحبا", "بالعالم", "اللغة", "العربية", "تعلم", "الآلة", "نموذج", "بيانات", "كتاب", "مدرسة", "شُكْرًا", "٣٤٥"]
HINDI = ["नमस्ते", "दुनिया", "भाषा", "हिन्दी", "मशीन", "लर्निंग", "मॉडल", "डेटा", "क़लम", "ज़रूर", "फ़िल्म", "१२३४"]
CYRILLIC = ["Привет", "мир", "язык", "обучение", "модель", "данные", "Москва", "ёлка", "Ёж", "щука", "ЪЫЬ", "Українська", "її"]
THAI = ["สวัสดี", "ภาษาไทย", "การเรียนรู้", "เครื่อง", "แบบจำลอง", "ข้อมูล", "กรุงเทพ", "๑๒๓"]
GREEK = ["Καλημέρα", "κόσμε", "γλώσσα", "μάθηση", "ΑΒΓΔ", "ψυχή", "ΐ", "ά"]
VIETNAMESE = ["Tiếng Việt", "người", "học máy", "dữ liệu", "mô hình", "Hà Nội", "phở", "đường"]
EMOJI = ["😀", "😂", "🥲", "👍", "👍🏻", "👍🏽", "👍🏿", "❤️", "❤", "🔥", "✨", "🚀", "🤖", "🧠", "🇺🇸", "🇯🇵", "🇩🇪",
         "👨‍👩‍👧‍👦", "👨‍👩‍👧", "👩‍💻", "🧑🏽‍🚀", "🏳️‍🌈", "👁️‍🗨️", "#️⃣", "1️⃣", "🫠", "🪐", "☕", "⌚", "©️", "™"]
# Text that NFC changes (or must keep): combining sequences, singletons, reordering, exclusions.
NFC_CASES = [
    "e\u0301", "E\u0301", "a\u0308", "o\u0302", "u\u0308\u0301", "A\u030a", "\u212b", "\u2126", "\u212a",
    "o\u0323\u0302", "o\u0302\u0323", "q\u0307\u0323", "d\u0323\u0307", "\u1e0b\u0323", "a\u0328\u0301",
    "\u1100\u1161", "\u1100\u1161\u11a8", "\u1112\u1161\u11ab\u1100\u1173\u11af", "\uac00\u11a8",
    "\u0915\u093c", "\u0958", "\u0928\u093c", "\u09c7\u09be", "\u0b47\u0b3e", "\u0dd9\u0dcf",
    "\u0340", "\u0341", "\u0343", "\u0344", "\u0374", "\u037e", "\u0387", "\u1f71", "\u2000", "\u2001",
    "\u2329", "\u232a", "\uf900", "\ufa10", "\U0002f800", "\u0301abc", "x\u0301\u0301\u0301", "\u0300\u0316",
    "ﬁ", "Ⅻ", "½", "ｈｅｌｌｏ", "\u00c5\u0301", "\u0041\u0300\u0301", "\u05d1\u05bc", "\ufb31",
    "\u30ab\u3099", "\u304b\u3099", "\u3071", "\u306f\u309a",
]
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
           "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
           "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
           "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>",
           "</tool_response>", "<think>", "</think>",
           # broken / near misses
           "<|im_start", "im_end|>", "<think", "</think >", "< think>", "<|IM_START|>", "<<|im_end|>>", "<|<|>|>"]
CODE = [
    'def train(model, data, lr=1e-4):\n    for step, batch in enumerate(data):\n        loss = model(batch)\n'
    '        loss.backward()\n        if step % 100 == 0:\n            print(f"step {step}: {loss.item():.4f}")\n',
    '#include <vector>\n\nint main(int argc, char** argv) {\n\tstd::vector<int> v{1, 2, 3};\n'
    '\tfor (auto& x : v) x *= 2;\n\treturn v.size() > 2 ? 0 : 1;\n}\n',
    'fn main() {\n    let words: Vec<&str> = "a b c".split(\' \').collect();\n    println!("{:?}", words);\n}\n',
    'const fetchData = async (url) => {\n  const res = await fetch(url);\n  return res.ok ? res.json() : null;\n};\n',
    'package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("hello, 世界")\n}\n',
    'SELECT name, COUNT(*) AS n FROM users WHERE age >= 18 GROUP BY name HAVING n > 1 ORDER BY n DESC;\n',
    '#!/bin/bash\nset -euo pipefail\nfor f in *.jsonl; do\n  wc -l "$f" | awk \'{print $1}\'\ndone\n',
    '<html>\n  <body class="main">\n    <p>Hello &amp; welcome!</p>\n  </body>\n</html>\n',
    '{"model": "Qwen3-0.6B", "lora": {"r": 16, "alpha": 32, "dropout": 0.05}, "targets": ["q_proj", "v_proj"]}\n',
    'x = [i**2 for i in range(10) if i % 2 == 0]  # squares\r\ny = {k: v for k, v in zip("abc", x)}\r\n',
    '    \t  \n\n\n    return None\n\n\n\n',
    "    public static void main(String[] args) throws IOException {\n        System.out.println(\"It's\");\n    }\n",
]
WHITESPACE = [" ", "  ", "   ", "    ", "        ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n", "\r\n\r\n", " \n ",
              "\u00a0", "\u3000", "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\u200b", "\u2009", "\u202f", " \t \n",
              "\r", "\r\r\n", "\n \n \n"]
# Well-established blocks for random characters (assigned long ago, so every Unicode version agrees).
RANDOM_RANGES = [(0x20, 0x7E), (0xA1, 0x17F), (0x391, 0x3C9), (0x410, 0x44F), (0x5D0, 0x5EA), (0x621, 0x64A),
                 (0x905, 0x939), (0xE01, 0xE2E), (0x3041, 0x3093), (0x30A1, 0x30F6), (0x4E00, 0x9FA5),
                 (0xAC00, 0xD7A3), (0x300, 0x36F), (0x2010, 0x2027), (0x2200, 0x22FF), (0x2500, 0x257F),
                 (0x1F600, 0x1F64F), (0x1F300, 0x1F5FF), (0x0, 0x1F)]


def english_sentence(rng):
    words = []
    for i in range(rng.randint(4, 24)):
        w = rng.choice(ENGLISH)
        r = rng.random()
        if r < 0.1:
            w = w.capitalize()
        elif r < 0.13:
            w = w.upper()
        if rng.random() < 0.08:
            w += rng.choice(CONTRACTIONS)
        words.append(w)
    return " ".join(words) + rng.choice(PUNCT)


def chinese_sentence(rng):
    return "".join(rng.choice(CHINESE) for _ in range(rng.randint(5, 40))) + rng.choice(CHINESE_PUNCT)


def word_run(rng, words, sep=" "):
    return sep.join(rng.choice(words) for _ in range(rng.randint(2, 12)))


def digits(rng):
    kind = rng.randrange(5)
    if kind == 0:
        return "".join(rng.choice("0123456789") for _ in range(rng.randint(5, 300)))
    if kind == 1:
        return f"{rng.uniform(-1e6, 1e6):.{rng.randint(0, 8)}f}"
    if kind == 2:
        return f"+1 ({rng.randint(100, 999)}) {rng.randint(100, 999)}-{rng.randint(1000, 9999)}"
    if kind == 3:
        return f"{rng.randint(1, 28)}/{rng.randint(1, 12)}/{rng.randint(1900, 2100)} 12:{rng.randint(0, 59):02d}"
    return "".join(rng.choice("٠١٢٣٤٥٦٧٨٩०१२३४५६७८९①②③ⅣⅫ¹²³") for _ in range(rng.randint(1, 20)))


def random_chars(rng):
    out = []
    for _ in range(rng.randint(1, 60)):
        lo, hi = rng.choice(RANDOM_RANGES)
        out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


def random_code_points(rng):
    """Anything valid, assigned or not: catches differences in Unicode versions (the regex of
    tokenizers knows Unicode 16.0, its NFC 9.0; PCRE2 knows 14.0)."""
    out = []
    for _ in range(rng.randint(1, 40)):
        plane = rng.choice([0, 0, 0, 1, 1, 2, 3, 14, rng.randint(4, 16)])
        cp = plane * 0x10000 + rng.randrange(0x10000)
        if 0xD800 <= cp <= 0xDFFF:
            cp = 0x1ACE  # a Unicode 14.0 combining mark instead of a surrogate
        out.append(chr(cp))
    return "".join(out)


def fragment(rng):
    kind = rng.randrange(21)
    if kind == 20:
        return random_code_points(rng)
    if kind < 5:
        return english_sentence(rng)
    if kind < 8:
        return chinese_sentence(rng)
    if kind == 8:
        return word_run(rng, JAPANESE, "")
    if kind == 9:
        return word_run(rng, KOREAN)
    if kind == 10:
        return word_run(rng, rng.choice([ARABIC, HINDI, CYRILLIC, THAI, GREEK, VIETNAMESE]))
    if kind == 11:
        return rng.choice(CODE)
    if kind == 12:
        return "".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 8)))
    if kind == 13:
        return digits(rng)
    if kind == 14:
        return "".join(rng.choice(WHITESPACE) for _ in range(rng.randint(1, 6)))
    if kind == 15:
        return rng.choice(ENGLISH) + rng.choice(NFC_CASES) + rng.choice(ENGLISH)
    if kind == 16:
        return rng.choice(SPECIAL) + rng.choice(["", "\n", " ", "user\n", "assistant"]) + rng.choice(SPECIAL)
    if kind == 17:
        return random_chars(rng)
    if kind == 18:
        return "".join(rng.choice(NFC_CASES) for _ in range(rng.randint(1, 10)))
    return rng.choice(SPECIAL)


def document(rng):
    if rng.random() < 0.02:  # a few long documents with long runs of one kind
        kind = rng.randrange(4)
        if kind == 0:
            return " " * rng.randint(1000, 20000) + "x"
        if kind == 1:
            return "".join(rng.choice(CHINESE) for _ in range(rng.randint(2000, 20000)))
        if kind == 2:
            return "".join(rng.choice("0123456789") for _ in range(rng.randint(2000, 20000)))
        return "a" * rng.randint(1000, 5000) + "\n" * rng.randint(100, 2000)
    parts = []
    for _ in range(rng.randint(1, 30)):
        parts.append(fragment(rng))
        parts.append(rng.choice(["", " ", " ", "\n", "\n\n", "", "\t"]))
    return "".join(parts)


def make_corpus(path, megabytes=5.0, seed=1234):
    """Writes the corpus; returns the list of documents."""
    rng = random.Random(seed)
    documents = []
    total = 0
    target = int(megabytes * 1_000_000)
    while total < target:
        doc = document(rng)
        documents.append(doc)
        total += len(doc.encode("utf-8"))
    with open(path, "w", encoding="utf-8") as f:
        for doc in documents:
            f.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
    return documents


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output")
    parser.add_argument("--mb", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    docs = make_corpus(args.output, args.mb, args.seed)
    print(f"{args.output}: {len(docs)} documents, {sum(len(d.encode()) for d in docs) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
