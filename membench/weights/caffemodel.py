"""Reading Caffe's binary files (.caffemodel, mean .binaryproto) without Caffe.

Caffe is not installable from PyPI, but its files are plain protocol buffers described by
the published caffe.proto (BVLC/caffe, src/caffe/proto/caffe.proto). This module declares
only the messages and fields needed to read learned blobs, with caffe.proto's own names
and field numbers, and parses them with the maintained `protobuf` package (the
`membench[weights]` extra); every other field of a file is skipped as unknown.

    NetParameter      name = 1, layers = 2 (V1LayerParameter, deprecated), layer = 100
    LayerParameter    name = 1, type = 2 (string), blobs = 7
    V1LayerParameter  name = 4, type = 5 (enum LayerType), blobs = 6
    BlobProto         num = 1, channels = 2, height = 3, width = 4 (legacy 4-D shape),
                      data = 5 (packed float), shape = 7, double_data = 8 (packed double)
    BlobShape         dim = 1 (packed int64)
"""

from __future__ import annotations

import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from membench.errors import MembenchError

# V1LayerParameter.LayerType values of the layers that carry blobs (caffe.proto)
V1_TYPES = {4: "Convolution", 14: "InnerProduct", 39: "Deconvolution"}


@lru_cache(maxsize=1)
def _messages():
    try:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    except ImportError:
        raise MembenchError("reading Caffe models needs protobuf: pip install 'membench[weights]'") from None
    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="membench_caffe_subset.proto", package="caffe",
                                               syntax="proto2")

    def message(name, *fields):
        m = proto.message_type.add(name=name)
        for field_name, number, kind, repeated, type_name, packed in fields:
            f = m.field.add(name=field_name, number=number, type=kind,
                            label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
            if type_name:
                f.type_name = f".caffe.{type_name}"
            if packed:
                f.options.packed = True

    message("BlobShape", ("dim", 1, F.TYPE_INT64, True, None, True))
    message("BlobProto",
            ("num", 1, F.TYPE_INT32, False, None, False), ("channels", 2, F.TYPE_INT32, False, None, False),
            ("height", 3, F.TYPE_INT32, False, None, False), ("width", 4, F.TYPE_INT32, False, None, False),
            ("data", 5, F.TYPE_FLOAT, True, None, True), ("shape", 7, F.TYPE_MESSAGE, False, "BlobShape", False),
            ("double_data", 8, F.TYPE_DOUBLE, True, None, True))
    message("LayerParameter", ("name", 1, F.TYPE_STRING, False, None, False),
            ("type", 2, F.TYPE_STRING, False, None, False), ("blobs", 7, F.TYPE_MESSAGE, True, "BlobProto", False))
    # LayerType is an enum in caffe.proto; read as int32 (same wire encoding) and named via V1_TYPES
    message("V1LayerParameter", ("name", 4, F.TYPE_STRING, False, None, False),
            ("type", 5, F.TYPE_INT32, False, None, False), ("blobs", 6, F.TYPE_MESSAGE, True, "BlobProto", False))
    message("NetParameter", ("name", 1, F.TYPE_STRING, False, None, False),
            ("layers", 2, F.TYPE_MESSAGE, True, "V1LayerParameter", False),
            ("layer", 100, F.TYPE_MESSAGE, True, "LayerParameter", False))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    get = message_factory.GetMessageClass
    return get(pool.FindMessageTypeByName("caffe.NetParameter")), get(pool.FindMessageTypeByName("caffe.BlobProto"))


@dataclass
class Layer:
    name: str
    type: str
    blobs: list  # numpy float32 arrays in their Caffe shapes


def blob_array(blob, where: str):
    import math

    import numpy as np

    if len(blob.shape.dim):
        shape = tuple(int(d) for d in blob.shape.dim)
    else:  # legacy 4-D shape (files written before BlobShape existed)
        shape = (blob.num, blob.channels, blob.height, blob.width)
    values = np.asarray(blob.data, dtype=np.float32) if len(blob.data) else \
        np.asarray(blob.double_data, dtype=np.float64).astype(np.float32)
    # exact integers: numpy's product of huge dimensions overflows (and may then "match")
    if any(d < 0 or d > 2**31 for d in shape) or math.prod(shape) != values.size:
        raise MembenchError(f"a blob of shape {list(shape)} holds {values.size} values", where)
    return values.reshape(shape)


def parse_net(data: bytes, where: str) -> list[Layer]:
    """The layers of a .caffemodel that carry blobs, in file order (new `layer` entries,
    else the deprecated V1 `layers`)."""
    from google.protobuf.message import DecodeError

    net_cls, _ = _messages()
    try:
        net = net_cls.FromString(data)
    except DecodeError as exc:
        raise MembenchError(f"not a Caffe model ({exc})", where) from None
    layers = []
    for layer in net.layer:
        if layer.blobs:
            layers.append(Layer(layer.name, layer.type, [blob_array(b, where) for b in layer.blobs]))
    for layer in net.layers:
        if layer.blobs:
            layers.append(Layer(layer.name, V1_TYPES.get(layer.type, f"V1 type {layer.type}"),
                                [blob_array(b, where) for b in layer.blobs]))
    if not layers:
        raise MembenchError("no learned layers in this Caffe model (a deploy .prototxt? the weights are "
                            "in the .caffemodel)", where)
    return layers


def parse_mean(data: bytes, where: str):
    """A mean .binaryproto (one BlobProto, usually 1x3xHxW in BGR) -> (C, H, W) float32."""
    from google.protobuf.message import DecodeError

    _, blob_cls = _messages()
    try:
        blob = blob_cls.FromString(data)
    except DecodeError as exc:
        raise MembenchError(f"not a Caffe mean file ({exc})", where) from None
    array = blob_array(blob, where)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3 or array.shape[0] != 3:
        raise MembenchError(f"a mean image of shape {list(array.shape)}; expected 3 channels", where)
    return array


def read_files(archive: Path, suffixes: tuple[str, ...]) -> dict[str, bytes]:
    """{member name: bytes} of the files ending in `suffixes` inside a folder, .zip, .tar(.gz)
    or the file itself. A damaged archive (bad CRC, truncated) is one line naming it; members
    may hold at most membench.data.archives' unpack limit (no zip bombs in memory)."""
    archive = Path(archive)
    if archive.is_dir():
        return {p.relative_to(archive).as_posix(): p.read_bytes()
                for p in sorted(archive.rglob("*")) if p.is_file() and p.name.lower().endswith(suffixes)}
    try:
        if zipfile.is_zipfile(archive):
            return _read_zip(archive, suffixes)
        if tarfile.is_tarfile(archive):
            return _read_tar(archive, suffixes)
    except _DAMAGED as exc:
        raise MembenchError(f"cannot read ({exc}); a damaged or incomplete copy of the archive?", archive) from None
    if archive.name.lower().endswith(suffixes):
        return {archive.name: archive.read_bytes()}
    raise MembenchError("expected a folder, a .zip or .tar(.gz) archive, or the file itself", archive)


# a damaged archive; NotImplementedError: unsupported compression; RuntimeError: encrypted
_DAMAGED = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, NotImplementedError, RuntimeError)


def _read_zip(archive: Path, suffixes) -> dict[str, bytes]:
    from membench.data.archives import unpack_budget

    out = {}
    with zipfile.ZipFile(archive) as z:
        budget = unpack_budget(archive)
        infos = [i for i in z.infolist() if i.filename.lower().endswith(suffixes)]
        for info in infos:
            budget.add(info.file_size)
        for info in infos:
            try:
                out[info.filename] = z.read(info)
            except _DAMAGED as exc:  # name the member: a bad CRC is one file's
                raise MembenchError(f"cannot read ({exc}); a damaged copy of the archive?",
                                    f"{archive}:{info.filename}") from None
    return out


def _read_tar(archive: Path, suffixes) -> dict[str, bytes]:
    from membench.data.archives import unpack_budget

    out = {}
    budget = unpack_budget(archive)
    with tarfile.open(archive) as t:
        for m in t:
            if m.isfile() and m.name.lower().endswith(suffixes):
                budget.add(m.size)
                out[m.name] = t.extractfile(m).read()
    return out
