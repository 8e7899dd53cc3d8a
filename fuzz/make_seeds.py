#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/.

Every seed is a small, well-formed (or deliberately near-miss) example of the format its
target reads, built here with the standard library only: label files in the layouts of
core/src/data, safetensors files, PyTorch zip / legacy / plain-pickle checkpoints with
hand-written pickle opcodes, and tiny PNG, JPEG, GIF and BMP images. Run it from anywhere;
it overwrites the seeds it writes and leaves other files alone.
"""

import json
import os
import struct
import zipfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    folder = os.path.join(HERE, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


# --- label files ------------------------------------------------------------------------------

BOX = '"(0, 0, 48, 48)"'
put(
    "ferplus_labels",
    "votes.csv",
    f"fer0000000.png,{BOX},4,0,0,1,3,2,0,0,0,0\n"
    f"fer0000001.png,{BOX},0,10,0,0,0,0,0,0,0,0\n"
    f"fer0000002.png,{BOX},0,0,0,0,0,0,0,0,10,0\n"
    f"fer0000003.png,{BOX},6,0,0,0,0,0,0,0,2,2\n",
)
put(
    "ferplus_labels",
    "bom_crlf.csv",
    f"\ufefffer0000010.png,{BOX},0,4,4,2,0,0,0,0,0,0\r\n"
    f"fer0000011.png,{BOX},2,2,2,2,2,0,0,0,0,0\r\n\r\n"
    f"fer0000012.png,{BOX},1,1,1,1,1,1,1,1,1,1\r\n",
)
put("ferplus_labels", "short_row.csv", f"fer0000020.png,{BOX},1,2,3\n")
put("ferplus_labels", "duplicate.csv", f"a.png,{BOX},0,9,0,0,0,0,0,0,1,0\n" * 2)

pixels = " ".join(str(i % 10) for i in range(48 * 48))
put(
    "fer2013_csv",
    "three_splits.csv",
    f"emotion,pixels,Usage\n0,{pixels},Training\n3,{pixels},PublicTest\n6,{pixels},PrivateTest\n",
)
put("fer2013_csv", "columns_by_name.csv", f"emotion, Usage, pixels\n4,Training,{pixels}\n")
put("fer2013_csv", "few_pixels.csv", "emotion,pixels,Usage\n1,0 1 2 3 255,Training\n")
put("fer2013_csv", "bad_usage.csv", "emotion,pixels,Usage\n7,1 2,Train\n")

put(
    "rafdb_labels",
    "list.txt",
    "train_00001.jpg 5\ntrain_00002.jpg 1\ntest_0001.jpg 7\ntest_0002.jpg 4\n",
)
put("rafdb_labels", "bad.txt", "train_00001.jpg 8\nval_0001.jpg 1\n../train_2.jpg 2\n\n")

HEADER = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
    "expression,valence,arousal\n"
)
put(
    "affectnet_labels",
    "training.csv",
    HEADER
    + '689/737db2483489148d783ef278f43f486c0a97e140fc4b6b61b84363ca.jpg,134,134,899,899,'
    '"181.64;530.91;188.32;627.82;195.1;723.37",1,0.785714,-0.055556\n'
    + '392/c4db2f9b7e4b422d14b6e038f0cdc3ecee239b55326e9181ee4520f9.jpg,20,20,137,137,'
    '"28.82;77.52;29.12;93.25",0,-0.017253,0.004313\n'
    + '1/x.jpg,0,0,10,10,"1;2",7,0,0\n1/y.jpg,0,0,10,10,"1;2",9,-2,-2\n',
)
put(
    "affectnet_labels",
    "odd_rows.csv",
    HEADER + './1/a.jpg,1,1,1,1,"say ""hi""",3,0,0\n1\\a.jpg,1,1,1,1,"",10,0,0\n/abs.jpg,1\n',
)

# --- safetensors ------------------------------------------------------------------------------


def safetensors(tensors, metadata=None):
    header, data = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


f32 = lambda *v: struct.pack(f"<{len(v)}f", *v)
put("safetensors", "f32.safetensors", safetensors({"w": ("F32", [2, 2], f32(1, 2, 3, 4))}))
put(
    "safetensors",
    "mixed.safetensors",
    safetensors(
        {
            "half": ("F16", [3], struct.pack("<3e", 0.5, -1.0, 2.0)),
            "bf16": ("BF16", [2], b"\x80\x3f\x00\x40"),
            "count": ("I64", [1], struct.pack("<q", 7)),
            "double": ("F64", [1], struct.pack("<d", 0.25)),
        },
        {"mimic.labels": '["a","b"]', "format": "pt"},
    ),
)
put(
    "safetensors",
    "nested.safetensors",
    safetensors(
        {
            "model.cls_token": ("F32", [1, 1, 2], f32(0.1, 0.2)),
            "optimizer.step": ("I32", [1], struct.pack("<i", 3)),
        }
    ),
)
put("safetensors", "empty.safetensors", safetensors({}))
put("safetensors", "scalar.safetensors", safetensors({"head.weight": ("F32", [], f32(1))}))

# --- PyTorch checkpoints (pickle protocol 2, written opcode by opcode) --------------------------


def p_str(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def p_global(module, name):
    return f"c{module}\n{name}\n".encode()


def p_int(n):
    return b"J" + struct.pack("<i", n)


def p_tuple(*items):
    return b"(" + b"".join(items) + b"t"


def p_tensor(storage_type, key, numel, shape):
    stride, acc = [], 1
    for d in reversed(shape):
        stride.insert(0, acc)
        acc *= d
    pid = p_tuple(p_str("storage"), p_global("torch", storage_type), p_str(key), p_str("cpu"), p_int(numel)) + b"Q"
    odict = p_global("collections", "OrderedDict") + b")R"
    args = p_tuple(pid, p_int(0), p_tuple(*map(p_int, shape)), p_tuple(*map(p_int, stride)), b"\x89", odict)
    return p_global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def p_dict(items):
    out = b"}("
    for k, v in items:
        out += p_str(k) + v
    return out + b"u"


def pickle(obj_bytes):
    return b"\x80\x02" + obj_bytes + b"."


def torch_zip(pkl, storages):
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        # A fixed time stamp keeps the seeds byte-identical from run to run.
        for name, raw in [("archive/data.pkl", pkl)] + [
            (f"archive/data/{key}", raw) for key, raw in storages.items()
        ] + [("archive/version", b"3\n")]:
            z.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), raw)
    return buf.getvalue()


put(
    "pth",
    "zip_f32.pth",
    torch_zip(pickle(p_dict([("w", p_tensor("FloatStorage", "0", 4, [2, 2]))])), {"0": f32(1, 2, 3, 4)}),
)
put(
    "pth",
    "zip_model_f16.pth",
    torch_zip(
        pickle(
            p_dict(
                [
                    (
                        "model",
                        p_dict(
                            [
                                ("cls_token", p_tensor("HalfStorage", "0", 2, [1, 1, 2])),
                                ("blocks.0.norm1.weight", p_tensor("HalfStorage", "1", 2, [2])),
                            ]
                        ),
                    ),
                    ("epoch", p_int(3)),
                ]
            )
        ),
        {"0": struct.pack("<2e", 0.5, 1.5), "1": struct.pack("<2e", 1.0, 1.0)},
    ),
)
# Legacy format (PyTorch < 1.6): magic number, protocol version, system info, the state dict,
# the storage keys, then each storage as an 8-byte element count and its bytes.
magic = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little") + b"."
legacy = (
    magic
    + pickle(b"M\xe9\x03")
    + pickle(p_dict([("protocol_version", b"M\xe9\x03"), ("little_endian", b"\x88")]))
    + pickle(p_dict([("w", p_tensor("FloatStorage", "0", 3, [3]))]))
    + pickle(b"]" + p_str("0") + b"a")
    + struct.pack("<q", 3)
    + f32(0.5, 1.5, 2.5)
)
put("pth", "legacy.pth", legacy)
put("pth", "plain_dict.pth", pickle(p_dict([("lr", p_int(1)), ("name", p_str("x"))])))
put("pth", "calls_code.pth", pickle(p_dict([("x", p_global("os", "system") + p_tuple(p_str("true")) + b"R")])))
put("pth", "f32.safetensors", safetensors({"w": ("F32", [2], f32(1, 2))}))

# --- images -----------------------------------------------------------------------------------


def png(w, h, depth, colour, rows, palette=None):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0))
    if palette:
        out += chunk(b"PLTE", palette)
    return out + chunk(b"IDAT", zlib.compress(b"".join(b"\0" + r for r in rows))) + chunk(b"IEND", b"")


put("image_decode", "grey.png", png(4, 4, 8, 0, [bytes(range(y * 4, y * 4 + 4)) for y in range(4)]))
put("image_decode", "palette.png", png(3, 1, 8, 3, [b"\0\1\2"], b"\xff\0\0\0\xff\0\0\0\xff"))
put("image_decode", "rgba.png", png(2, 2, 8, 6, [b"\1\2\3\0\4\5\6\xff"] * 2))
put("image_decode", "deep.png", png(2, 1, 16, 0, [struct.pack(">2H", 0, 65535)]))


def jpeg(components, app14=False):
    """An 8x8 baseline JPEG, flat: one-bit codes for a zero DC and an end of block."""
    n = len(components)
    j = b"\xff\xd8"
    if app14:
        j += b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"
    j += b"\xff\xdb\x00\x43\x00" + b"\x01" * 64
    j += b"\xff\xc0" + struct.pack(">HBHHB", 8 + 3 * n, 8, 8, 8, n)
    j += b"".join(bytes([c, 0x11, 0]) for c in components)
    for cls in (0x00, 0x10):
        j += b"\xff\xc4\x00\x14" + bytes([cls, 1]) + b"\0" * 15 + b"\0"
    j += b"\xff\xda" + struct.pack(">HB", 6 + 2 * n, n) + b"".join(bytes([c, 0]) for c in components)
    j += b"\x00\x3f\x00" + b"\x00" * ((2 * n + 7) // 8) + b"\xff\xd9"
    return j


put("image_decode", "grey.jpg", jpeg([1]))
put("image_decode", "cmyk.jpg", jpeg([1, 2, 3, 4], app14=True))
gif = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00;"
)
put("image_decode", "dot.gif", gif)
bmp_rows = b"\x00\x00\xff\xff\xff\xff\x00\x00" + b"\x00\xff\x00\x10\x20\x30\x00\x00"
bmp = b"BM" + struct.pack("<IHHI", 54 + len(bmp_rows), 0, 0, 54)
bmp += struct.pack("<IiiHHIIiiII", 40, 2, 2, 1, 24, 0, len(bmp_rows), 2835, 2835, 0, 0) + bmp_rows
put("image_decode", "tiny.bmp", bmp)
