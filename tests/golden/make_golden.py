#!/usr/bin/python3
"""Writes the golden fixtures tests/unit/models/test_golden.cpp checks dtrain against.

PyTorch is the independent implementation: it builds the same small MLP and CNN
(same layer order, so parameters() order is dtrain's flat parameter layout), runs one
forward and backward on a fixed batch, and records the inputs, labels, parameters,
logits, loss and every parameter gradient.

Run with Debian's PyTorch (CPU):  /usr/bin/python3 tests/golden/make_golden.py

Format (line-oriented text): '#' lines are comments; 'KEY V...' lines describe the
model; 'tensor NAME COUNT' is followed by COUNT whitespace-separated values. Every
value is the shortest decimal that reads back as the same float32 (at most 9
significant digits), so the C++ side loads exactly the numbers PyTorch used.
Parameters and inputs are rounded to a few decimal digits before use, so the
fixtures stay small; the rounded values are the model's exact inputs on both sides.
"""
import os

import numpy as np
import torch
from torch import nn

SEED = 20240607
BATCH = 8
INPUT_SHAPE = (1, 28, 28)
CLASSES = 10
HERE = os.path.dirname(os.path.abspath(__file__))


def fmt(values):
    # numpy prints a float32 as its shortest round-trip decimal.
    return [str(np.float32(v)) for v in values]


def round_to_significant(t, digits):
    """float32 nearest to t rounded to `digits` significant decimal digits."""
    rounded = [float(np.format_float_scientific(np.float32(v), precision=digits - 1, unique=False))
               for v in t.detach().reshape(-1).tolist()]
    return torch.tensor(rounded, dtype=torch.float32).reshape(t.shape)


def build(spec):
    layers = []
    if spec["model"] == "mlp":
        layers.append(nn.Flatten())
        features = INPUT_SHAPE[0] * INPUT_SHAPE[1] * INPUT_SHAPE[2]
        widths = spec["hidden"]
    else:
        channels, size = INPUT_SHAPE[0], INPUT_SHAPE[1]
        k = spec["kernel_size"]
        for out in spec["channels"]:
            layers += [nn.Conv2d(channels, out, k, stride=1, padding=(k - 1) // 2), nn.ReLU(),
                       nn.MaxPool2d(2, 2)]
            channels, size = out, size // 2
        layers.append(nn.Flatten())
        features = channels * size * size
        widths = spec["cnn_hidden"]
    for width in widths:
        layers += [nn.Linear(features, width), nn.ReLU()]
        features = width
    layers.append(nn.Linear(features, CLASSES))
    return nn.Sequential(*layers)


def write_fixture(path, spec, seed):
    torch.manual_seed(seed)
    model = build(spec)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(round_to_significant(p, 4))
    x = torch.round(torch.rand((BATCH,) + INPUT_SHAPE) * 100) / 100
    labels = torch.randint(0, CLASSES, (BATCH,))

    logits = model(x)
    loss = nn.functional.cross_entropy(logits, labels, reduction="sum") / BATCH
    loss.backward()

    lines = ["# dtrain golden fixture; do not edit. Regenerate with:",
             "#   /usr/bin/python3 tests/golden/make_golden.py",
             "# torch %s (CPU), torch.manual_seed(%d)" % (torch.__version__, seed),
             "# loss = cross_entropy(logits, labels, reduction='sum') / batch"]
    for key, value in spec.items():
        lines.append("%s %s" % (key, " ".join(str(v) for v in value) if isinstance(value, list) else value))
    lines.append("input_shape %s" % " ".join(str(d) for d in INPUT_SHAPE))
    lines.append("classes %d" % CLASSES)
    lines.append("batch %d" % BATCH)

    def tensor(name, values, formatter=fmt):
        values = list(values)
        lines.append("tensor %s %d" % (name, len(values)))
        text = formatter(values)
        for i in range(0, len(text), 10):
            lines.append(" ".join(text[i:i + 10]))

    tensor("input", x.reshape(-1).tolist())
    tensor("labels", labels.tolist(), lambda v: [str(int(a)) for a in v])
    tensor("logits", logits.detach().reshape(-1).tolist())
    tensor("loss", [loss.item()])
    for name, p in model.named_parameters():
        tensor("param:" + name, p.detach().reshape(-1).tolist())
    for name, p in model.named_parameters():
        tensor("grad:" + name, p.grad.reshape(-1).tolist())

    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %s (%d bytes)" % (os.path.relpath(path), os.path.getsize(path)))


def main():
    # One thread: the same summation order on every run, so the fixtures regenerate
    # byte for byte.
    torch.set_num_threads(1)
    # The MLP's first layer dominates the file (784 * width values, twice), so its
    # widths stay small to keep each fixture under 200 KB; 8 and 6 differ, so a
    # transposed weight cannot pass.
    write_fixture(os.path.join(HERE, "mlp.golden"), {"model": "mlp", "hidden": [8, 6]}, SEED)
    write_fixture(os.path.join(HERE, "cnn.golden"),
                  {"model": "cnn", "channels": [4, 8], "kernel_size": 5, "cnn_hidden": [16]},
                  SEED + 1)


if __name__ == "__main__":
    main()
