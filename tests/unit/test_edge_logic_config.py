"""Property tests of the terminal configuration validator (CPython, hypothesis).

Whatever the cloud or a hand-edited site file contains, ``validate`` either
returns a configuration that is its own normal form or raises ConfigError
with a ``path: problem`` message; it never crashes with another exception
and never echoes the broker password.
"""

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.config import validate
from edge.errors import ConfigError
from tests.mpy.test_config import SECRET, cloud, site

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["hi", "lo", "leak", "contact", "leak1.ior", "room.t", "di.di1", SECRET]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def paths(obj, prefix=()):
    """Every (path, container) in a nested dict/list structure."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from paths(v, (*prefix, i))


def mutate(cfg, path, value, delete):
    node = cfg
    for key in path[:-1]:
        node = node[key]
    if delete and isinstance(node, dict):
        node.pop(path[-1], None)
    elif delete and isinstance(node, list):
        node.pop(path[-1])
    else:
        node[path[-1]] = value


@settings(max_examples=1000, deadline=None)
@given(st.data(), values, st.booleans())
def test_any_mutation_is_accepted_normalized_or_refused_with_a_path(data, value, delete):
    cfg = {"site": site(), "cloud": cloud()}
    all_paths = [p for p in paths(cfg) if p]
    path = data.draw(st.sampled_from(all_paths))
    mutate(cfg, path, copy.deepcopy(value), delete)
    try:
        out = validate(cfg)
    except ConfigError as err:
        msg = str(err)
        assert ": " in msg and msg.split(": ", 1)[1]
        assert SECRET not in msg
        return
    assert validate(copy.deepcopy(out)) == out
    for t in out["cloud"]["thresholds"]:
        if t["cond"] in ("hi", "leak") and None not in (t["warn"], t["alarm"]):
            assert t["warn"] <= t["alarm"]
