"""Size limits for what untrusted files declare.

Consumes: shapes read from a user's files (``model.json``'s ``input_shape``, a prune plan's or
``quant.json``'s example inputs) and the class labels of a dataset. Produces: a yes/no, so each reader can refuse a shape with its
own one-line error before a tensor of that size is made: a 35-byte edit to a file must not turn a
command into minutes of allocation or an out-of-memory kill.
"""

from __future__ import annotations

# elements of one example input: 2^27 floats are 512 MB, past any edge model's input (a 4K RGB
# frame is 25 M, a 32 k-token sequence 32 k)
MAX_INPUT_ELEMENTS = 1 << 27
# classes a dataset's labels may imply (the head is made with max label + 1 outputs): ImageNet-21k
# has 21,841, the largest face-identity sets about a million
MAX_CLASSES = 1 << 20


def input_shape_ok(shape) -> bool:
    """True when ``shape`` is a list of positive ints whose product is at most MAX_INPUT_ELEMENTS."""
    if not isinstance(shape, (list, tuple)):
        return False
    n = 1
    for s in shape:
        if not isinstance(s, int) or isinstance(s, bool) or s < 1:
            return False
        n *= s
        if n > MAX_INPUT_ELEMENTS:
            return False
    return True
