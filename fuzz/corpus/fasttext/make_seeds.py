#!/usr/bin/python3
"""Writes the seed models of fuzz_fasttext: fastText models small enough for the fuzzer's input
limit (8 KiB), trained by Debian's fasttext on a few package descriptions, plus the two
hand-made models of tests/data/fasttext. Run by hand: /usr/bin/python3 make_seeds.py
"""
import os
import shutil
import subprocess
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
tests = os.path.join(here, "..", "..", "..", "tests", "data", "fasttext")


def main():
    dump = subprocess.run(["apt-cache", "dumpavail"], stdout=subprocess.PIPE, check=True,
                          encoding="utf-8").stdout
    lines = []
    for block in dump.split("\n\n"):
        fields = dict(l.split(": ", 1) for l in block.split("\n") if ": " in l and l[0] != " ")
        if fields.get("Section") in ("games", "fonts", "math") and "Description" in fields:
            lines.append(f"__label__{fields['Section']} {fields['Description'].lower()}")
    work = tempfile.mkdtemp()
    text = os.path.join(work, "text.txt")
    with open(text, "w", encoding="utf-8") as f:
        f.write("\n".join(lines[:300]) + "\n")
    common = ["-thread", "1", "-seed", "1", "-verbose", "0", "-dim", "2", "-epoch", "2",
              "-minCount", "8"]
    runs = {
        "sup_ova_ngrams": ["supervised", "-loss", "ova", "-minn", "2", "-maxn", "3", "-bucket",
                           "20", "-wordNgrams", "2"],
        "sup_hs": ["supervised", "-loss", "hs", "-bucket", "10", "-wordNgrams", "3"],
        "skipgram": ["skipgram", "-loss", "ns", "-minn", "3", "-maxn", "4", "-bucket", "20"],
        "sup_quantized": ["supervised", "-loss", "softmax", "-bucket", "300", "-wordNgrams", "2"],
    }
    for name, args in runs.items():
        subprocess.run(["fasttext", args[0], "-input", text, "-output", os.path.join(work, name),
                        *args[1:], *common], check=True)
        if name == "sup_quantized":
            subprocess.run(["fasttext", "quantize", "-input", text, "-output",
                            os.path.join(work, name), "-dsub", "2", "-qnorm", "-verbose", "0"],
                           check=True)
            shutil.copy(os.path.join(work, name + ".ftz"), os.path.join(here, name + ".ftz"))
        else:
            shutil.copy(os.path.join(work, name + ".bin"), os.path.join(here, name + ".bin"))
    for name in ("tiny_softmax.bin", "tiny_hs.bin"):
        shutil.copy(os.path.join(tests, name), os.path.join(here, name))
    shutil.rmtree(work)
    for f in sorted(os.listdir(here)):
        if f.endswith((".bin", ".ftz")):
            size = os.path.getsize(os.path.join(here, f))
            print(f, size, "bytes" + ("  (over the 8 KiB limit!)" if size > 8192 else ""))


if __name__ == "__main__":
    main()
