"""A damaged or hostile model catalog (RWKV_TUI_CATALOG) is a CatalogError line, nothing else."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from engine.catalog import Catalog, CatalogError, load_catalog, parse_catalog
from tests.fuzz.conftest import FUZZ
from tests.fuzz.mutations import digest, mutated, no_hang

SHIPPED = Path(__file__).resolve().parents[2] / "engine" / "catalog.json"
SEED = SHIPPED.read_bytes()
VALID = json.loads(SEED)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)


def _outcome(call, *args) -> Catalog | None:  # noqa: ANN001
    try:
        catalog = no_hang(call, *args)
    except CatalogError as exc:
        assert "\n" not in str(exc)
        return None
    assert isinstance(catalog, Catalog)
    return catalog


@FUZZ
@given(data=mutated(SEED))
def test_damaged_catalog_bytes(data: bytes, tmp_path_factory) -> None:  # noqa: ANN001
    path = tmp_path_factory.mktemp("catalog") / "catalog.json"
    path.write_bytes(data)
    before = digest(path)
    _outcome(load_catalog, path)
    assert digest(path) == before


@FUZZ
@given(entry=st.integers(0, len(VALID["models"]) - 1), key=st.sampled_from(sorted(VALID["models"][0]) + ["for_model"]),
       value=json_values)
def test_hostile_field_values(entry: int, key: str, value: object) -> None:
    data = copy.deepcopy(VALID)
    data["models"][entry][key] = value
    catalog = _outcome(parse_catalog, data, Path("c.json"))
    if catalog is not None:  # accepted: then it really is well-formed
        found = catalog.entries[entry]
        assert found.size > 0 and "/" not in found.file and found.file not in ("", ".", "..")
