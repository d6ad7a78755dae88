#!/usr/bin/python3
"""Trains the small fastText models tests/test_fasttext.cpp reads and records what Debian's
`fasttext` program (0.9.2) prints for them.

Run by hand on Debian 12 with the `fasttext` package installed:  /usr/bin/python3 make_models.py
The tests only read the files this writes; they never run Python or fastText.

Text: package descriptions from Debian's own package lists (`apt-cache dumpavail`), labelled
by their section (and, for the multi-label model, by their role/interface tags), and the
licence texts Debian ships in /usr/share/common-licenses. Training is deterministic: one
thread and a fixed seed.
"""
import math
import os
import random
import struct
import re
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
queries = os.path.join(here, "queries")
expected = os.path.join(here, "expected")
work = os.path.join(here, "work")  # training text, removed at the end (not stored)

SECTIONS = ["games", "science", "sound", "graphics", "fonts", "math", "net", "admin", "text",
            "x11"]


def run(*args, stdin=None):
    """Runs fasttext with args; returns stdout as bytes."""
    result = subprocess.run(["fasttext", *args], input=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, check=True)
    return result.stdout


def analogies(model, k, triplets):
    """fasttext analogies never stops at the end of its input (it repeats the last query):
    read its answers to `triplets` and stop it."""
    proc = subprocess.Popen(["fasttext", "analogies", model, k], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    proc.stdin.write(("\n".join(triplets) + "\n").encode())
    proc.stdin.close()
    prompt = b"Query triplet (A - B + C)? "
    out = b""
    while out.count(prompt) <= len(triplets):
        chunk = proc.stdout.read1(4096)
        if not chunk:
            break
        out += chunk
    proc.kill()
    proc.wait()
    cut = 0
    for _ in range(len(triplets) + 1):
        cut = out.index(prompt, cut) + len(prompt)
    return out[:cut]


def normalise(text):
    text = text.lower()
    text = re.sub(r"([,.;:!?()\[\]{}\"'’“”])", r" \1 ", text)
    return " ".join(text.split())


def packages():
    dump = subprocess.run(["apt-cache", "dumpavail"], stdout=subprocess.PIPE, check=True,
                          encoding="utf-8").stdout
    out = []
    for block in dump.split("\n\n"):
        fields = {}
        key = None
        for line in block.split("\n"):
            if line.startswith(" ") and key:
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "Package" in fields and "Section" in fields and "Description" in fields:
            section = fields["Section"].split("/")[-1]
            tags = [t.strip() for t in fields.get("Tag", "").split(",") if t.strip()]
            out.append((fields["Package"], section, normalise(fields["Description"]), tags))
    out.sort()
    return out


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def main():
    os.makedirs(queries, exist_ok=True)
    os.makedirs(expected, exist_ok=True)
    os.makedirs(work, exist_ok=True)
    rng = random.Random(12)

    # ---- supervised text: descriptions labelled by section --------------------------------
    by_section = {s: [] for s in SECTIONS}
    for _, section, desc, tags in packages():
        if section in by_section and desc:
            by_section[section].append((desc, tags))
    train, held_out, train_multi = [], [], []
    for s in SECTIONS:
        items = by_section[s]
        rng.shuffle(items)
        for desc, tags in items[:150]:
            train.append(f"__label__{s} {desc}")
            labels = [f"__label__{s}"] + [f"__label__{t}" for t in tags
                                          if t.startswith(("role::", "interface::"))][:2]
            train_multi.append(" ".join(labels) + " " + desc)
        held_out += [f"__label__{s} {desc}" for desc, _ in items[150:154]]
    rng.shuffle(train)
    rng.shuffle(train_multi)
    # Many labels (every package tag): a quantized output layer needs at least 256 rows.
    tagged = [(d, t) for _, _, d, t in packages() if t and d]
    rng.shuffle(tagged)
    train_tags = [" ".join(f"__label__{t}" for t in tags) + " " + desc
                  for desc, tags in tagged[:3000]]
    sup_text = os.path.join(work, "sup.txt")
    sup_multi = os.path.join(work, "sup_multi.txt")
    write(sup_text, ("\n".join(train) + "\n").encode())
    write(sup_multi, ("\n".join(train_multi) + "\n").encode())
    sup_tags = os.path.join(work, "sup_tags.txt")
    write(sup_tags, ("\n".join(train_tags) + "\n").encode())

    # ---- unsupervised text: the licences Debian ships, then some descriptions -------------
    lic_dir = "/usr/share/common-licenses"
    lines = []
    for name in ["GPL-2", "GPL-3", "LGPL-2.1", "Apache-2.0", "MPL-2.0", "Artistic", "CC0-1.0"]:
        with open(os.path.join(lic_dir, name), encoding="utf-8", errors="replace") as f:
            for line in f:
                line = normalise(line)
                if line:
                    lines.append(line)
    descs = [d for s in SECTIONS for d, _ in by_section[s][:150]]
    unsup_text = os.path.join(work, "unsup.txt")
    write(unsup_text, ("\n".join(lines + descs) + "\n").encode())

    common = ["-thread", "1", "-seed", "1", "-verbose", "0"]
    models = {
        # name: (command, text, options)
        "sup_softmax": ("supervised", sup_text,
                        ["-loss", "softmax", "-dim", "8", "-wordNgrams", "2", "-bucket", "400",
                         "-minCount", "4", "-epoch", "20", "-lr", "0.5"]),
        "sup_hs": ("supervised", sup_text,
                   ["-loss", "hs", "-dim", "6", "-minn", "2", "-maxn", "4", "-bucket", "400",
                    "-minCount", "4", "-epoch", "20", "-lr", "0.5"]),
        "sup_ova": ("supervised", sup_multi,
                    ["-loss", "ova", "-dim", "8", "-wordNgrams", "2", "-bucket", "400",
                     "-minCount", "4", "-epoch", "20", "-lr", "0.5"]),
        "sup_ns": ("supervised", sup_text,
                   ["-loss", "ns", "-neg", "3", "-dim", "6", "-wordNgrams", "3", "-minn", "3",
                    "-maxn", "5", "-bucket", "300", "-minCount", "4", "-epoch", "20",
                    "-lr", "0.5"]),
        "sup_tags": ("supervised", sup_tags,
                     ["-loss", "hs", "-dim", "4", "-minCount", "6", "-minCountLabel", "3",
                      "-epoch", "10", "-lr", "0.5"]),
        "skipgram": ("skipgram", unsup_text,
                     ["-loss", "ns", "-dim", "10", "-minn", "3", "-maxn", "6", "-bucket", "500",
                      "-minCount", "8", "-epoch", "40", "-lr", "0.1"]),
        "cbow": ("cbow", unsup_text,
                 ["-loss", "hs", "-dim", "8", "-minn", "2", "-maxn", "5", "-bucket", "500",
                  "-minCount", "8", "-epoch", "20"]),
    }
    for name, (command, text, options) in models.items():
        run(command, "-input", text, "-output", os.path.join(here, name), *options, *common)
        os.remove(os.path.join(here, name + ".vec"))
    # Quantized copies (product quantization needs 256 rows or more per matrix): one pruned
    # to 300 input rows with quantized norms, one whole with a sub-vector size that does not
    # divide dim, and one with a quantized output layer.
    quantized = {
        "sup_softmax": (sup_text, ["-cutoff", "300", "-dsub", "2", "-qnorm"]),
        "sup_ova": (sup_multi, ["-dsub", "3"]),
        "sup_tags": (sup_tags, ["-dsub", "3", "-qnorm", "-qout"]),
    }
    for name, (text, options) in quantized.items():
        run("quantize", "-input", text, "-output", os.path.join(here, name), *options,
            "-verbose", "0")

    # ---- queries ------------------------------------------------------------------------
    words = ["</s>", "a", "the", "game", "games", "library", "font", "license", "software",
             "program", "zzyzx", "gamez", "librarian", "naïve", "bokmål", "gröbner", "日本語",
             "ελληνικά", "straße", "€uro", "x", "qt", "—", "supercalifragilisticexpialidocious",
             "__label__games"]
    for name, (_, _, options) in models.items():
        min_count = options[options.index("-minCount") + 1]
        for line in run("dump", os.path.join(here, name + ".bin"), "dict").decode().split("\n")[1:]:
            parts = line.rsplit(" ", 2)
            if (len(parts) == 3 and parts[2] == "word" and parts[1] == min_count
                    and parts[0] not in words):
                words.append(parts[0])  # rare: seen exactly minCount times
                break
    words = [w for w in words if w != "__label__games"]  # fastText aborts on a label (assert)
    write(os.path.join(queries, "words.txt"), ("\n".join(words) + "\n").encode())

    sup_lines = held_out + [
        "", "   ", "__label__games", "chess engine for the terminal",
        "__label__net  secure   shell\tclient and server",
        "naïve gröbner bases — in 日本語", "zzyzx qqqq wwww",
        "font font font font font", "multiplayer game\r", "library\fwith\vodd separators",
        "__label__nosuchlabel tool", "a", "the the the",
    ]
    write(os.path.join(queries, "sup_lines.txt"), ("\n".join(sup_lines) + "\n").encode())
    write(os.path.join(queries, "sup_lines_no_final_newline.txt"),
          "\n".join(sup_lines[:6] + ["last line without newline"]).encode())
    unsup_lines = [normalise(l) for l in lines[5:12]] + descs[100:106] + [
        "", "zzyzx", "the  free\tsoftware   foundation", "naïve 日本語 straße",
        "license\r", "a b c d e f g",
    ]
    write(os.path.join(queries, "unsup_lines.txt"), ("\n".join(unsup_lines) + "\n").encode())

    # ---- what fastText prints -----------------------------------------------------------
    def query_file(name):
        with open(os.path.join(queries, name), "rb") as f:
            return f.read()

    all_models = [(n, ".bin") for n in models] + [(n, ".ftz") for n in quantized]
    for name, ext in all_models:
        model = os.path.join(here, name + ext)
        tag = name + ext.replace(".", "_")
        write(os.path.join(expected, tag + ".args.txt"), run("dump", model, "args"))
        if ext == ".bin":
            write(os.path.join(expected, tag + ".dict.txt"), run("dump", model, "dict"))
        write(os.path.join(expected, tag + ".word_vectors.txt"),
              run("print-word-vectors", model, stdin=query_file("words.txt")))
        sup = name.startswith("sup")
        lines_file = "sup_lines.txt" if sup else "unsup_lines.txt"
        write(os.path.join(expected, tag + ".sentence_vectors.txt"),
              run("print-sentence-vectors", model, stdin=query_file(lines_file)))
        if sup:
            qpath = os.path.join(queries, "sup_lines.txt")
            write(os.path.join(expected, tag + ".predict_k1.txt"),
                  run("predict-prob", model, qpath))
            write(os.path.join(expected, tag + ".predict_k3_t0.05.txt"),
                  run("predict-prob", model, qpath, "3", "0.05"))
            # k = -1: every label (the model with hundreds of labels: the best 25)
            k_all = "25" if name == "sup_tags" else "-1"
            write(os.path.join(expected, tag + ".predict_all.txt"),
                  run("predict-prob", model, qpath, k_all))
            write(os.path.join(expected, tag + ".predict_no_final_newline.txt"),
                  run("predict-prob", model,
                      os.path.join(queries, "sup_lines_no_final_newline.txt"), "2"))
        if ext == ".bin" and name in ("sup_softmax", "sup_hs", "sup_ova", "sup_ns", "sup_tags"):
            write(os.path.join(expected, tag + ".output.txt"), run("dump", model, "output"))
        if ext == ".bin" and name in ("sup_hs", "skipgram", "cbow"):
            out = b""
            for w in ["game", "naïve", "日本語", "x", "</s>", "zzyzx"]:
                out += b"# " + w.encode() + b"\n" + run("print-ngrams", model, w)
            write(os.path.join(expected, tag + ".ngrams.txt"), out)
        if name == "skipgram":
            write(os.path.join(expected, tag + ".nn.txt"),
                  run("nn", model, "5", stdin="software\nlicence\nzzyzx\ngröbner\n".encode()))
            write(os.path.join(expected, tag + ".analogies.txt"),
                  analogies(model, "5", ["license licensed program", "game games font"]))

    # Two hand-made models small enough to work out by hand (see tests/test_fasttext.cpp),
    # written field by field as the format says, and what fastText predicts with them.
    def model_bytes(loss, entries, nwords, input_rows, output_rows):
        out = struct.pack("<ii", 793712314, 12)
        out += struct.pack("<12i", 2, 5, 5, 1, 5, 1, loss, 3, 0, 0, 0, 100) + struct.pack("<d", 1e-4)
        out += struct.pack("<iiiqq", len(entries), nwords, len(entries) - nwords,
                           sum(c for _, c in entries), -1)
        for i, (word, count) in enumerate(entries):
            out += word.encode() + b"\0" + struct.pack("<qb", count, 0 if i < nwords else 1)
        for rows in (input_rows, output_rows):
            out += b"\0" + struct.pack("<qq", len(rows), 2)
            out += b"".join(struct.pack("<2f", *r) for r in rows)
        return out

    ln3 = float(struct.unpack("<f", struct.pack("<f", math.log(3.0)))[0])
    tiny = {
        # softmax: "good" -> hidden (1, 0), "bad good" -> (2/3, 2/3), an empty line -> (0, 0)
        "tiny_softmax": model_bytes(3, [("</s>", 4), ("good", 3), ("bad", 3), ("__label__pos", 2),
                                        ("__label__neg", 2)], 3,
                                    [(0, 0), (2, 0), (0, 2)], [(1, 0), (0, 1)]),
        # hs with label counts 5, 3, 2: "x" -> hidden (0, ln 3), root row 1 scores 0, inner
        # node row 0 scores ln 3
        "tiny_hs": model_bytes(1, [("</s>", 4), ("x", 3), ("__label__a", 5), ("__label__b", 3),
                                   ("__label__c", 2)], 2,
                               [(0, 2 * ln3), (0, 0)], [(0, 1), (1, 0), (0, 0)]),
    }
    tiny_lines = "good\nbad good\n\nbad\nx\n"
    write(os.path.join(queries, "tiny_lines.txt"), tiny_lines.encode())
    for name, data in tiny.items():
        write(os.path.join(here, name + ".bin"), data)
        write(os.path.join(expected, name + "_bin.predict_all.txt"),
              run("predict-prob", os.path.join(here, name + ".bin"),
                  os.path.join(queries, "tiny_lines.txt"), "-1"))

    # fastText's string hash by an independent implementation: 32-bit FNV-1a over the bytes,
    # each byte widened as a signed char first.
    def fasttext_hash(data):
        h = 2166136261
        for b in data:
            h ^= (b - 256 if b >= 128 else b) & 0xFFFFFFFF
            h = (h * 16777619) & 0xFFFFFFFF
        return h

    samples = [b"", b"a", b"</s>", b"<ab>", b"\xc3\xa9", "naïve".encode(), "日本語".encode(),
               b"\x80", b"\xff", b"__label__games"]
    write(os.path.join(expected, "hashes.txt"),
          "".join(f"{s.hex() or '-'} {fasttext_hash(s)}\n" for s in samples).encode())

    for f in os.listdir(work):
        os.remove(os.path.join(work, f))
    os.rmdir(work)
    total = sum(os.path.getsize(os.path.join(here, f)) for f in os.listdir(here)
                if f.endswith((".bin", ".ftz")))
    print(f"models: {total} bytes in all")


if __name__ == "__main__":
    sys.exit(main())
