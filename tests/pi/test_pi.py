"""The edge package on emulated Raspberry Pi OS: arm64 with ai-edge-litert, arm64 with tflite-runtime
2.14, armhf (32-bit) with tflite-runtime 2.14, installed and run with the commands of
docs/raspberry-pi.md, on .tflite files made by the host's TensorFlow, agreeing with the host.

Needs root and binfmt_misc (``make setup-pi``); without them these tests skip and say why, and
``POLYHEAD_REQUIRE_PI=1`` (set by ``make test``) turns that skip into a failure. The first run builds
the roots (minutes); later runs reuse them (see piroot.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import piroot  # noqa: E402
from piroot import ARCHES, ENVS, PiEnv, PiError  # noqa: E402

REPO = HERE.parents[1]
REQUIRE = os.environ.get(piroot.REQUIRE_ENV) == "1"
BENCH_EXTRA = "--runs 3 --warmup 1 --rounds 2 --min-time 0"  # appended to pi:run's bench: emulation is ~200x slower than a Pi
# int8 across *different* runtimes' kernels (ARM tflite-runtime 2.14 against x86 ai-edge-litert 2.3):
# the most a raw uint8 output differs, in quanta (output steps of 1/256). Measured on these fixture
# models: 1 on arm64 and armhf (docs/raspberry-pi.md); one more for calibration landing elsewhere
# when another host CPU converts the fixtures.
INT8_CROSS_RUNTIME_QUANTA = 2
FLOAT_ATOL = 1e-5
# tflite-runtime's own Interpreter, no polyhead in between, on the file from elsewhere.
RAW_INVOKE = ("python -c 'import glob, os, tflite_runtime.interpreter as t; "
              "i = t.Interpreter(glob.glob(os.path.expanduser(\"~/foreign/*.tflite\"))[0]); "
              "i.allocate_tensors(); i.invoke(); print(\"invoked\")'")

pytestmark = [pytest.mark.slow, pytest.mark.pi]


def need_pi() -> None:
    """Skip, naming why, where the emulated Pi cannot run; fail instead under POLYHEAD_REQUIRE_PI=1."""
    problem = piroot.host_problem()
    if problem:
        if REQUIRE:
            pytest.fail(f"{piroot.REQUIRE_ENV}=1 but the emulated Raspberry Pi cannot run here: {problem}")
        pytest.skip(f"emulated Raspberry Pi unavailable: {problem}")


# -- the files: models and images made on the host ------------------------------------------------


def odd_images(out: Path) -> tuple[list[str], list[str]]:
    """Real-world odd but valid images, and broken ones; returns (valid names, broken names)."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    rgb = Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
    rgb.convert("CMYK").save(out / "cmyk.jpg", quality=90)
    rgb.convert("L").save(out / "grey.png")
    Image.fromarray((rng.integers(0, 65536, (50, 40))).astype(np.uint16)).save(out / "deep16.png")
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 3
    pal.save(out / "palette_alpha.png", transparency=3)
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(rng.integers(0, 256, (60, 80), dtype=np.uint8)))
    rgba.save(out / "rgba.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: the edge applies it
    rgb.save(out / "exif6.jpg", exif=exif.tobytes(), quality=90)
    rgb.resize((1, 1)).save(out / "one_pixel.png")
    rgb.resize((400, 9)).save(out / "very_wide.bmp")
    rgb.save(out / "anim.gif")
    valid = sorted(p.name for p in out.iterdir())
    data = (out / "exif6.jpg").read_bytes()
    (out / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (out / "empty.png").write_bytes(b"")
    (out / "not_an_image.jpg").write_text("this is text, not a JPEG\n")
    return valid, ["empty.png", "not_an_image.jpg", "truncated.jpg"]


@dataclass(frozen=True)
class PiFiles:
    models: Path
    photos: Path  # valid images + labels.csv: pi:run's ~/photos
    odd: Path  # photos plus broken images: the probe's folder
    tampered: Path  # a folder with one tampered .tflite
    foreign: Path  # a folder with one int8 file converted by TF's defaults (per-channel dense weights)
    pixels: Path  # pixels.npz: the valid images decoded on the host, for interpreter-only agreement
    broken: tuple[str, ...]


@pytest.fixture(scope="session")
def pi_files(tmp_path_factory) -> PiFiles:
    need_pi()
    from edge_fixtures import build_models, make_images

    from convert.tflite import DENSE_PER_CHANNEL

    base = tmp_path_factory.mktemp("pi-files")
    models = build_models(base / "models", dense_per_channel=DENSE_PER_CHANNEL)  # as polyhead converts
    photos = make_images(base / "photos", n=6)
    _, broken = odd_images(base / "odd")
    for p in photos.iterdir():
        shutil.copy(p, base / "odd" / p.name)
    for name in os.listdir(base / "odd"):
        if name not in broken:
            shutil.copy(base / "odd" / name, photos / name)
    tampered = base / "tampered"
    tampered.mkdir()
    data = bytearray((models / "multihead.int8.tflite").read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside the flatbuffer: the card's SHA-256 no longer matches
    (tampered / "multihead.int8.tflite").write_bytes(bytes(data))
    foreign = base / "foreign"
    foreign.mkdir()
    build_models(foreign, dense_per_channel=True, files=("multihead.int8.tflite",))
    from edge_fixtures import SIZE

    from edge.runtime.preprocess import load_image

    pixels = {p.name: load_image(p, SIZE, SIZE) for p in sorted(photos.iterdir()) if p.name != "labels.csv"}
    np.savez(base / "pixels.npz", **pixels)
    return PiFiles(models, photos, base / "odd", tampered, foreign, base / "pixels.npz", tuple(broken))


def _probe_on_host(python: str, files: PiFiles, reference: bool = False) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PROBE_REFERENCE_KERNELS", None)
    if reference:
        env["PROBE_REFERENCE_KERNELS"] = "1"
        env["POLYHEAD_RUNTIME"] = "tflite-runtime"
    proc = subprocess.run([python, str(HERE / "probe.py"), str(files.models), str(files.odd), str(files.pixels)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="session")
def host(pi_files) -> dict[str, dict]:
    """The host's probe: ai-edge-litert x86 (optimised) and, from .venv-legacy, tflite-runtime 2.14's
    reference kernels (the baseline ARM tflite-runtime matches bit for bit)."""
    from convert.compat import legacy_python

    out = {"ai-edge-litert": _probe_on_host(sys.executable, pi_files)}
    legacy = legacy_python()
    if legacy is not None:
        out["tflite-runtime"] = _probe_on_host(legacy, pi_files, reference=True)
    return out


# -- one emulated environment, run as the docs say ------------------------------------------------


@dataclass(frozen=True)
class PiRun:
    env: PiEnv
    install_log: str
    run: subprocess.CompletedProcess
    tampered: subprocess.CompletedProcess
    foreign: subprocess.CompletedProcess  # predict over ~/foreign
    raw_foreign: subprocess.CompletedProcess | None  # tflite-runtime's own Interpreter invoking that file
    probe: dict
    bench: dict
    live: subprocess.CompletedProcess  # docs block pi:live, with the fake rpicam-vid


def _activate_line(env: PiEnv) -> str:
    lines = [ln.strip() for ln in piroot.block(env.install_block).splitlines()]
    return next(ln for ln in lines if ln.startswith(". ") and ln.endswith("/bin/activate"))


def _run_env(env: PiEnv, root: Path, install_log: str) -> PiRun:
    """Run one installed environment in its (mounted, files copied) root, as the docs say."""
    arch = ARCHES[env.arch]
    act = _activate_line(env)
    # pi:run in a folder of its own, so each environment's bench.json is its own.
    work = f"{piroot.PI_HOME}/{env.name}"
    run_block = piroot.block("run").replace("--out bench.json", f"--out bench.json {BENCH_EXTRA}")

    def sh(script: str, what: str) -> subprocess.CompletedProcess:
        return piroot.run_as_pi(root, arch, f"{act}\nmkdir -p {work} && cd {work}\n{script}", timeout=600,
                                what=f"{env.name}: {what}")

    run = sh(run_block, "docs block pi:run")
    tampered = sh("polyhead-edge predict ~/tampered ~/photos", "tampered file")
    foreign = sh("polyhead-edge predict ~/foreign ~/photos", "file from elsewhere")
    raw_foreign = None if env.runtime != "tflite-runtime" else sh(RAW_INVOKE, "raw tflite-runtime invoke")
    probe = sh("python ~/probe.py ~/polyhead-models ~/odd ~/pixels.npz", "probe")
    if probe.returncode != 0:
        raise PiError(f"{env.name}: probe failed: {probe.stderr.strip().splitlines()[-1:]}")
    bench_path = root / work.lstrip("/") / "bench.json"
    bench = json.loads(bench_path.read_text()) if bench_path.exists() else {}
    live = sh(f"export PATH={piroot.PI_HOME}/fakebin:$PATH\n{piroot.block('live')}", "docs block pi:live")
    return PiRun(env, install_log, run, tampered, foreign, raw_foreign, json.loads(probe.stdout), bench, live)


LIVE_FRAMES = 12


def _live_files(home: Path) -> None:
    """The fake rpicam-vid (~/fakebin) and the JPEGs it streams (~/live-frames)."""
    from live_fixtures import fake_rpicam_vid, jpeg_frames, write_frames

    shutil.rmtree(home / "live-frames", ignore_errors=True)
    write_frames(home / "live-frames", jpeg_frames(LIVE_FRAMES))
    fake_rpicam_vid(home / "fakebin", f"{piroot.PI_HOME}/live-frames", period=0.1)


def _run_or_error(env: PiEnv, root: Path, install_log: str) -> PiRun | str:
    try:
        return _run_env(env, root, install_log)
    except PiError as e:
        return str(e)


def _run_arch(arch_name: str, files: PiFiles) -> dict[str, PiRun | str]:
    """Build (or reuse) one architecture's root, install its environments one after the other (they
    share the package source folder, which pip builds in), then run them side by side; an
    environment's failure is its one line."""
    arch = ARCHES[arch_name]
    out: dict[str, PiRun | str] = {}
    envs = [e for e in ENVS if e.arch == arch_name]
    try:
        root = piroot.build_root(arch, log=lambda m: print(m, file=sys.stderr))
        home = root / piroot.PI_HOME.lstrip("/")
        with piroot.mounted(root, arch):
            piroot.copy_to_pi(root, files.models)
            for name in ("photos", "odd", "tampered", "foreign"):
                shutil.rmtree(home / name, ignore_errors=True)
                shutil.copytree(getattr(files, name), home / name)
            shutil.copy(HERE / "probe.py", home / "probe.py")
            _live_files(home)
            shutil.copy(files.pixels, home / "pixels.npz")
            for env in envs:
                shutil.rmtree(home / env.name, ignore_errors=True)
            subprocess.run(["chown", "-R", f"{piroot.PI_UID}:{piroot.PI_UID}", str(home)], check=True)
            installed = {}
            for env in envs:
                try:
                    installed[env.name] = piroot.install(root, arch, env)
                except PiError as e:
                    out[env.name] = str(e)
            ready = [e for e in envs if e.name in installed]
            with ThreadPoolExecutor(max(1, len(ready))) as pool:
                runs = pool.map(lambda e: _run_or_error(e, root, installed[e.name]), ready)
                out.update({e.name: run for e, run in zip(ready, runs, strict=True)})
    except PiError as e:
        for env in envs:
            out.setdefault(env.name, str(e))
    return out


@pytest.fixture(scope="session")
def pi_runs(request, pi_files) -> dict[str, PiRun | str]:
    """The run of every selected environment (``-k arm64`` builds no armhf root); the architectures
    in parallel, builds included."""
    selected = {item.callspec.params["pi_run"].arch for item in request.session.items
                if hasattr(item, "callspec") and "pi_run" in item.callspec.params}
    arches = [a for a in ARCHES if a in selected]
    with ThreadPoolExecutor(len(arches)) as pool:
        parts = list(pool.map(lambda a: _run_arch(a, pi_files), arches))
    return {k: v for part in parts for k, v in part.items()}


@pytest.fixture(params=[pytest.param(e, id=e.name) for e in ENVS])
def pi_run(request, pi_runs) -> PiRun:
    result = pi_runs[request.param.name]
    if isinstance(result, str):
        pytest.fail(result)
    return result


# -- the checks -----------------------------------------------------------------------------------


def test_docs_commands_run_on_the_pi(pi_run: PiRun):
    """pi:install-* and pi:run, as the page shows them: info, predict, bench on the Pi's runtime."""
    env, arch = pi_run.env, ARCHES[pi_run.env.arch]
    assert pi_run.run.returncode == 0, f"{env.name}: pi:run failed:\n{pi_run.run.stderr[-3000:]}"
    out = pi_run.run.stdout
    assert f"runtime here: {env.runtime}" in out, out[:500]
    assert out.count("loads here: yes") == 6, out
    assert "multihead.int8: 1 file(s)" in out and "separate.float32: 2 file(s)" in out
    assert "accuracy over 6 labelled images (multihead.int8)" in out
    assert pi_run.probe["machine"] == arch.machine and pi_run.probe["runtime"] == env.runtime
    # The edge code that ran is this checkout's, installed into the venv (not a stale copy, not the source tree).
    assert "/site-packages/edge" in pi_run.probe["edge_path"], pi_run.probe["edge_path"]
    here = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((REPO / "edge").glob("*.py"))}
    assert pi_run.probe["edge_sources"] == here
    bench = pi_run.bench
    assert bench["machine"] == arch.machine and bench["runtime"] == env.runtime and bench["runs"] == 3
    assert sorted(bench["variants"]) == ["joint.float32", "joint.int8", "multihead.float32", "multihead.int8",
                                         "separate.float32"]
    for vid, v in bench["variants"].items():
        assert v.get("error") is None, (vid, v.get("error"))
        assert v["errors"] == 0 and v["interpreter_ms"]["p50"] > 0 and v["accuracy"]["n"] == 6, vid


def test_tampered_file_is_one_line(pi_run: PiRun):
    proc = pi_run.tampered
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert "multihead.int8.tflite" in lines[0] and "Traceback" not in proc.stderr, lines[0]


def test_known_runtime_crash_is_one_line(pi_run: PiRun):
    """A file from elsewhere that tflite-runtime 2.14 on ARM crashes on (its own Interpreter dies
    with SIGSEGV: the finding, pinned) is one line from the edge CLI, naming the file and the way
    out; ai-edge-litert runs it (edge/safety/runtime_faults.py)."""
    proc = pi_run.foreign
    if pi_run.env.runtime != "tflite-runtime":
        assert proc.returncode == 0 and proc.stdout.count("make:") >= 6, proc.stderr[-2000:]
        return
    raw = pi_run.raw_foreign
    assert raw.returncode in (139, -11) and "invoked" not in raw.stdout, (raw.returncode, raw.stderr[-500:])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "foreign/multihead.int8.tflite" in lines[0] and "crashes (SIGSEGV)" in lines[0], lines[0]
    assert "ai-edge-litert" in lines[0]


def test_predictions_agree_with_the_host(pi_run: PiRun, host):
    """On identical (host-decoded) pixels, every model's raw outputs: float32 within 1e-5 of x86
    ai-edge-litert; int8 bit-identical to the same runtime's x86 kernels (ai-edge-litert: its
    optimised ones; tflite-runtime 2.14: its reference ones) and within INT8_CROSS_RUNTIME_QUANTA of
    x86 ai-edge-litert."""
    env = pi_run.env
    if env.runtime not in host:
        if REQUIRE or os.environ.get("POLYHEAD_REQUIRE_LEGACY") == "1":
            pytest.fail(f"no .venv-legacy on the host for the {env.runtime} x86 reference")
        pytest.skip(f"no .venv-legacy on the host (make setup-legacy): no {env.runtime} x86 reference")
    pi, litert, same = pi_run.probe["given"], host["ai-edge-litert"]["given"], host[env.runtime]["given"]
    precision = {name: e["precision"] for name, e in pi_run.probe["raw"].items()}
    assert sorted(pi) == sorted(litert) and len(pi) == 6
    worst_cross = 0
    for name, per_image in pi.items():
        assert sorted(per_image) == sorted(litert[name]) and len(per_image) >= 14
        for image, outputs in per_image.items():
            for key, got in outputs.items():
                a, b = np.array(got, dtype=np.float64), np.array(litert[name][image][key], dtype=np.float64)
                if precision[name] == "float32":
                    np.testing.assert_allclose(a, b, atol=FLOAT_ATOL, err_msg=f"{env.name} {name} {image} {key}")
                else:
                    ref = np.array(same[name][image][key])
                    assert np.array_equal(a, ref), (env.name, name, image, key, a.tolist(), ref.tolist())
                    worst_cross = max(worst_cross, int(np.abs(a - b).max()))
    print(f"{env.name}: int8 against x86 ai-edge-litert: at most {worst_cross} quanta")
    assert worst_cross <= INT8_CROSS_RUNTIME_QUANTA, (env.name, worst_cross)


def _edge_part(error: str) -> str:
    """An image error's own words, without Pillow's detail in parentheses (its wording, e.g. how many
    bytes a truncated file left, changes between Pillow versions)."""
    return error.split(" (")[0]


def test_decoding_agrees_with_the_host(pi_run: PiRun, host):
    """The same image gives the same pixels on the Pi, except JPEG decoding by another libjpeg build,
    which may differ by a few levels, and resizing by another Pillow version (armhf takes Debian's
    Pillow 9.4), which may differ by one level; broken images give the same one-line error."""
    pi, litert = pi_run.probe["raw"], host["ai-edge-litert"]["raw"]
    same_pillow = pi_run.probe["pillow"] == host["ai-edge-litert"]["pillow"]
    for name, entry in pi.items():
        for image, got in entry["images"].items():
            want = litert[name]["images"][image]
            if "error" in want:
                assert "error" in got, (image, want["error"])
                if same_pillow:
                    assert got["error"] == want["error"], (image, got["error"], want["error"])
                assert _edge_part(got["error"]) == _edge_part(want["error"]), (image, got["error"], want["error"])
                continue
            a, b = np.array(got["_pixels"], dtype=int), np.array(want["_pixels"], dtype=int)
            tolerance = 8 if image.endswith(".jpg") else 0 if same_pillow else 1
            assert np.abs(a - b).max() <= tolerance, (pi_run.env.name, image, int(np.abs(a - b).max()), tolerance)


def test_cli_predict_matches_the_host(pi_run: PiRun, host, pi_files):
    """`predict --format jsonl` of every variant over the odd folder: same labels as the host for
    float32 on every image decoded to the host's very pixels, the broken images as error records,
    exit status 1 (some images failed)."""
    pi, ref = pi_run.probe["predict"], host["ai-edge-litert"]["predict"]
    same_pillow = pi_run.probe["pillow"] == host["ai-edge-litert"]["pillow"]
    model, raw = next(iter(pi_run.probe["raw"].items()))
    same_pixels = {image for image, got in raw["images"].items()
                   if "_pixels" in got and got["_pixels"] == host["ai-edge-litert"]["raw"][model]["images"][image]["_pixels"]}
    assert len(same_pixels) >= 6  # the photos (PNG) at least
    assert sorted(pi) == sorted(ref) and len(pi) == 5
    for vid in pi:
        assert pi[vid]["exit"] == 1, (vid, pi[vid]["exit"])
        got = {r["image"]: r for r in pi[vid]["records"]}
        want = {r["image"]: r for r in ref[vid]["records"]}
        assert sorted(got) == sorted(want) and len(got) == len(os.listdir(pi_files.odd)) - 1  # minus labels.csv
        for image in pi_files.broken:
            # The message names the file by its path, which differs (~/odd on the Pi): compare what follows.
            assert "error" in got[image], image
            mine, theirs = got[image]["error"].split(image)[-1], want[image]["error"].split(image)[-1]
            assert _edge_part(mine) == _edge_part(theirs) and (mine == theirs or not same_pillow), (image, mine, theirs)
        if "float32" in vid:
            for image, r in got.items():
                if "error" not in r and image in same_pixels:
                    assert {h: v["label"] for h, v in r["heads"].items()} == \
                           {h: v["label"] for h, v in want[image]["heads"].items()}, (vid, image)


def test_live_docs_block_runs_on_the_pi(pi_run: PiRun):
    """pi:live as the page shows it, the Pi camera faked: JSON lines per frame, multihead.int8 picked
    from the folder (and said), and the end record accounting for every frame."""
    proc = pi_run.live
    assert proc.returncode == 0, f"{pi_run.env.name}: pi:live failed:\n{proc.stderr[-3000:]}"
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    results = [r for r in records if "event" not in r]
    end = records[-1]
    assert end["event"] == "end" and end["reason"] == "end of stream" and end["frames"] == LIVE_FRAMES, end
    assert results and end["results"] + end["dropped"] == LIVE_FRAMES and end["corrupt"] == 0
    seqs = [r["seq"] for r in results]
    assert seqs == sorted(set(seqs))
    assert all(set(r["heads"]) == {"make", "type"} and r["age_ms"] > 0 for r in results)
    assert "using multihead.int8" in proc.stderr
