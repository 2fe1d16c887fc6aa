"""The golden fixtures' text format, written (tests/golden/make_golden.py describes it):
'#' comment lines, 'KEY VALUE' lines, and 'tensor NAME COUNT' followed by COUNT
values, ten per line, each float the shortest decimal that reads back as the same
float32."""
import os

import numpy as np


def float_text(values):
    # numpy prints a float32 as its shortest round-trip decimal.
    return [str(np.float32(v)) for v in values]


class Fixture:
    def __init__(self, comments):
        self.lines = ["# " + c for c in comments]

    def key(self, name, value):
        self.lines.append("%s %s" % (name, value))

    def tensor(self, name, values, formatter=float_text):
        values = list(values)
        self.lines.append("tensor %s %d" % (name, len(values)))
        text = formatter(values)
        for i in range(0, len(text), 10):
            self.lines.append(" ".join(text[i:i + 10]))

    def floats(self, name, t):
        self.tensor(name, t.detach().float().reshape(-1).tolist())

    def ints(self, name, t):
        self.tensor(name, t.reshape(-1).tolist(), lambda v: [str(int(a)) for a in v])

    def write(self, path):
        with open(path, "w") as f:
            f.write("\n".join(self.lines) + "\n")
        print("wrote %s (%d bytes)" % (os.path.relpath(path), os.path.getsize(path)))
