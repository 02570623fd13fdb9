"""Metadata properties of an ONNX file, without torch (``inspect`` and the ONNX Runtime rewrites run
on devices that have no torch).

Consumes: an ``onnx.ModelProto`` and a dict of properties. Produces: the file's ``metadata_props``
(strings; other values as sorted JSON), set or read as a dict.
"""

from __future__ import annotations

import json

import onnx


def set_metadata(proto: onnx.ModelProto, props: dict) -> None:
    existing = {p.key: p for p in proto.metadata_props}
    for k, v in props.items():
        if v is None:
            continue
        v = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
        if k in existing:
            existing[k].value = v
        else:
            proto.metadata_props.add(key=k, value=v)


def metadata(proto: onnx.ModelProto) -> dict:
    return {p.key: p.value for p in proto.metadata_props}
