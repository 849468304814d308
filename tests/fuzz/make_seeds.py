#!/usr/bin/python3
"""tests/fuzz/make_seeds.py — writes the committed seed corpora of the libFuzzer harnesses.

    /usr/bin/python3 tests/fuzz/make_seeds.py [build/barlowd]

corpus/image: PNG (gray, gray+alpha, RGB, RGBA, palette with tRNS, 16-bit, interlaced), JPEG
(gray, RGB, progressive, EXIF-rotated), binary PGM, a training copy (BTC1), an IDX file, and
headers that declare 100,000 x 100,000 (PNG) and 65,535 x 65,535 (JPEG) pixels.
corpus/checkpoint: a `tiny` checkpoint from `barlowd train` (flags byte 0 and 1, see
fuzz_inputs.h). corpus/http: raw requests for every route, multipart included.
Needs Debian's python3-pil (the corpora are committed; tests never run this)."""
import io
import os
import struct
import subprocess
import sys
import tempfile
import zlib

from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
BARLOWD = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "build", "barlowd")


def put(kind, name, data):
    d = os.path.join(HERE, "corpus", kind)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def pil(img, fmt, **kw):
    b = io.BytesIO()
    img.save(b, format=fmt, **kw)
    return b.getvalue()


def gradient(mode, w, h):
    img = Image.new("L", (w, h))
    img.putdata([(x * 7 + y * 13) % 256 for y in range(h) for x in range(w)])
    return img.convert(mode)


def png_chunk(typ, data):
    return struct.pack(">I", len(data)) + typ + data + struct.pack(">I", zlib.crc32(typ + data))


def images():
    put("image", "gray.png", pil(gradient("L", 12, 9), "PNG"))
    put("image", "gray_alpha.png", pil(gradient("LA", 7, 5), "PNG"))
    put("image", "rgb.png", pil(gradient("RGB", 10, 6), "PNG"))
    put("image", "rgba.png", pil(gradient("RGBA", 5, 5), "PNG"))
    pal = gradient("RGB", 8, 8).convert("P", palette=Image.ADAPTIVE, colors=16)
    put("image", "palette_trns.png", pil(pal, "PNG", transparency=3))
    put("image", "gray16.png", pil(gradient("L", 6, 6).convert("I;16"), "PNG"))
    put("image", "interlaced.png", pil(gradient("RGB", 9, 9), "PNG", interlace=1))
    put("image", "gray.jpg", pil(gradient("L", 16, 16), "JPEG", quality=80))
    put("image", "rgb.jpg", pil(gradient("RGB", 17, 11), "JPEG", quality=90))
    put("image", "progressive.jpg", pil(gradient("RGB", 16, 8), "JPEG", progressive=True))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90
    put("image", "exif_rotated.jpg", pil(gradient("RGB", 12, 8), "JPEG", exif=exif.tobytes()))
    put("image", "gray.pgm", b"P5\n4 3\n255\n" + bytes(range(0, 240, 20)))
    put("image", "train_copy.btc", b"BTC1" + struct.pack("<HHB3x", 3, 2, 1) + bytes(range(6)))
    put("image", "images.idx", struct.pack(">IIII", 0x803, 2, 3, 3) + bytes(range(18)))
    # decompression bombs: headers that claim far more pixels than the body holds
    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    put("image", "bomb.png", b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) +
        png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b""))
    jpg = bytearray(pil(gradient("L", 8, 8), "JPEG"))
    sof = jpg.find(b"\xff\xc0")
    jpg[sof + 5:sof + 9] = struct.pack(">HH", 65535, 65535)
    put("image", "bomb.jpg", bytes(jpg))


def checkpoints():
    with tempfile.TemporaryDirectory() as d:
        data = os.path.join(d, "data")
        os.makedirs(data)
        for i in range(8):
            with open(os.path.join(data, "%d.pgm" % i), "wb") as f:
                f.write(b"P5\n16 16\n255\n" + bytes((x * (i + 3)) % 256 for x in range(256)))
        ck = os.path.join(d, "tiny.bin")
        subprocess.run([BARLOWD, "train", "--data", data, "--model", "tiny", "--steps", "1",
                        "--batch", "4", "--checkpoint", ck], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        blob = open(ck, "rb").read()
    put("checkpoint", "tiny_as_is", b"\x00" + blob)
    put("checkpoint", "tiny_fix_crc", b"\x01" + blob)


def http():
    def req(name, method, path, headers=(), body=b""):
        h = "".join("%s: %s\r\n" % kv for kv in headers)
        chunked = any(k == "Transfer-Encoding" for k, _ in headers)
        if (body or method in ("POST", "PUT")) and not chunked:
            h += "Content-Length: %d\r\n" % len(body)
        put("http", name, ("%s %s HTTP/1.1\r\nHost: fuzz\r\n%s\r\n" % (method, path, h)).encode()
            + body)
    png = pil(gradient("L", 8, 8), "PNG")
    req("healthz", "GET", "/healthz")
    req("status", "GET", "/status")
    req("metrics", "GET", "/metrics")
    req("checkpoints", "GET", "/checkpoints")
    req("export_onnx", "GET", "/checkpoints/1/export?format=onnx")
    req("export_safetensors", "GET", "/checkpoints/1/export?format=safetensors")
    req("export_bad_format", "GET", "/checkpoints/1/export?format=tflite")
    req("images_list", "GET", "/images?limit=2&after=1")
    req("images_list_filter", "GET",
        "/images?filter=%7B%22label%22%3A%7B%22%24in%22%3A%5B%22a%22%2C3%5D%7D%7D&limit=5")
    req("images_sha256", "GET", "/images?sha256=" + "ab" * 32)
    req("neighbors_filter", "GET",
        "/neighbors/1?k=3&filter=%7B%22n%22%3A%7B%22%24gte%22%3A1%2C%22%24lt%22%3A9%7D%7D")
    req("images_delete_ids", "POST", "/images/delete", [("Content-Type", "application/json")],
        b'{"ids": [2, 3, 999]}')
    req("images_delete_filter", "POST", "/images/delete", [("Content-Type", "application/json")],
        b'{"filter": {"k": {"$ne": "v"}, "a": {"$exists": true}}}')
    req("images_delete_all", "POST", "/images/delete", [("Content-Type", "application/json")],
        b'{"filter": {}, "all": false}')
    req("train_png", "POST", "/train?meta=%7B%22a%22%3A1%7D", [("Content-Type", "image/png")],
        png)
    b = "fuzzb"
    mp = ("--%s\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
          "Content-Type: image/png\r\n\r\n" % b).encode() + png + (
        "\r\n--%s\r\nContent-Disposition: form-data; name=\"meta\"\r\n\r\n{\"k\": \"v\"}\r\n"
        "--%s--\r\n" % (b, b)).encode()
    req("train_multipart", "POST", "/train",
        [("Content-Type", "multipart/form-data; boundary=%s" % b)], mp)
    req("embed_png", "POST", "/embed", [("Content-Type", "image/png")], png)
    req("embed_id", "GET", "/embed/1")
    req("neighbors", "GET", "/neighbors/1?k=3")
    vec = "[" + ",".join(["0.5"] * 16) + "]"
    req("search_vector", "POST", "/search", [("Content-Type", "application/json")],
        ('{"vector": %s, "k": 5}' % vec).encode())
    req("search_filter", "POST", "/search", [("Content-Type", "application/json")],
        ('{"vector": %s, "k": 5, "exact": true, "filter": {"label": "x", "a": {"$nin": [1, '
         'true]}}}' % vec).encode())
    req("search_vectors", "POST", "/search", [("Content-Type", "application/json")],
        ('{"vectors": [%s, %s], "k": 2}' % (vec, vec)).encode())
    req("search_image", "POST", "/search?k=2", [("Content-Type", "image/png")], png)
    req("image_meta", "GET", "/images/1")
    req("image_raw", "GET", "/images/1/raw")
    req("delete", "DELETE", "/images/2")
    req("chunked", "POST", "/embed", [("Content-Type", "image/png"),
                                      ("Transfer-Encoding", "chunked")],
        b"%x\r\n" % len(png) + png + b"\r\n0\r\n\r\n")


if __name__ == "__main__":
    images()
    checkpoints()
    http()
