"""Container images for the real node, built without Docker or a registry.

Three images, each an OCI image-layout archive that ``ctr -n k8s.io images import`` reads:

| image | layers | what it is |
|---|---|---|
| ``localhost/airflow-adaptive/pause:3.10`` | the static Go ``tools/node/pause`` | the sandbox image: holds the pod's namespaces, reaps orphans as PID 1 |
| ``localhost/airflow-adaptive/monitor:<hash>`` | base, app | the monitor sidecar, as the project's ``Dockerfile`` builds it |
| ``localhost/airflow-adaptive/stage:<hash>`` | base, app, science | the example pipeline's real workloads (numpy, scikit-learn); root, as most training images |
| ``localhost/airflow-adaptive/stage-nonroot:<hash>`` | base, app | a training image with ``USER 2000``: the pod does not say whom it runs as |

The **base** layer is a Debian bookworm root filesystem made by ``mmdebstrap --variant=essential
--include=python3`` (Python 3.11, as the Dockerfile's ``python:3.11-slim``, which cannot be pulled
here). The **app** layer is what the Dockerfile's ``pip install --no-deps . psutil nvidia-ml-py``
installs, laid out by ``pip install --target`` with the pinned wheels and the package's own source,
byte-compiled (unchecked-hash ``.pyc``: the root filesystem is read-only in the pod), under
``/opt/airflow-adaptive/site`` with an ``airflow-adaptive`` launcher on ``PATH``. The image config
copies the Dockerfile's: ``USER 1000:1000``, ``WORKDIR /tmp``, ``PYTHONUNBUFFERED=1``,
``PYTHONDONTWRITEBYTECODE=1``, ``NVIDIA_DRIVER_CAPABILITIES=utility``, entrypoint and command.

Tags are content hashes, so an image is rebuilt and re-imported exactly when what goes into it
changed, and a stale one can never be mistaken for the current one.

    python tools/node/images.py --cache DIR --pause BIN     # prints one JSON line: name -> ref, archive
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTHON_TAG = "3.11"
# The monitor's runtime dependencies, as pinned in the Dockerfile.
MONITOR_WHEELS = ("psutil==7.2.2", "nvidia-ml-py==13.615.71")
# The example pipeline's (examples/pipeline.py): what the stage image adds.
SCIENCE_WHEELS = ("numpy==2.3.5", "scipy==1.16.3", "scikit-learn==1.7.2", "joblib==1.5.2", "threadpoolctl==3.6.0")
# libstdc++6 and libgomp1: what numpy/scipy/scikit-learn wheels load (python:3.11-slim has them)
BASE_PACKAGES = ("python3", "libstdc++6", "libgomp1")
SITE = "opt/airflow-adaptive/site"
LAUNCHER = "#!/usr/bin/python3\nimport sys\nfrom airflow_adaptive.cli.main import main\nsys.exit(main())\n"
PAUSE_REF = "localhost/airflow-adaptive/pause:3.10"
MONITOR_REPO = "localhost/airflow-adaptive/monitor"
STAGE_REPO = "localhost/airflow-adaptive/stage"
NONROOT_REPO = "localhost/airflow-adaptive/stage-nonroot"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"


def log(msg: str) -> None:
    print(f"[node-images] {msg}", file=sys.stderr, flush=True)


# ---- layers -----------------------------------------------------------------------------------
def base_layer(cache: Path) -> Path:
    """The Debian root filesystem, made once per package list."""
    key = hashlib.sha256(" ".join(("bookworm", "essential", *BASE_PACKAGES)).encode()).hexdigest()[:12]
    out = cache / f"base-{key}.tar"
    if out.exists():
        return out
    tmp = out.with_suffix(".tmp.tar")
    log(f"mmdebstrap bookworm ({', '.join(BASE_PACKAGES)}) -> {out}")
    subprocess.run(["mmdebstrap", "--quiet", "--variant=essential", f"--include={','.join(BASE_PACKAGES)}",
                    "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
                    "--dpkgopt=path-exclude=/usr/share/locale/*",
                    "bookworm", str(tmp), "http://deb.debian.org/debian"], check=True)
    tmp.rename(out)
    return out


def _pip_target(target: Path, requirements: tuple[str, ...]) -> None:
    """Wheels for Debian bookworm's CPython 3.11 on amd64, whatever the host Python is."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--only-binary=:all:", "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
                    "--python-version", PYTHON_TAG, "--implementation", "cp", "--target", str(target),
                    *requirements], check=True)


def app_tree(root: Path) -> None:
    site = root / SITE
    _pip_target(site, MONITOR_WHEELS)
    shutil.copytree(REPO / "airflow_adaptive", site / "airflow_adaptive",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    launcher = root / "opt/airflow-adaptive/bin/airflow-adaptive"
    launcher.parent.mkdir(parents=True)
    launcher.write_text(LAUNCHER)
    launcher.chmod(0o755)
    _compile(site)


def science_tree(root: Path) -> None:
    site = root / SITE
    _pip_target(site, SCIENCE_WHEELS)
    _compile(site)


def _compile(site: Path) -> None:
    # Unchecked hashes: valid whatever the files' times in the layer, never rewritten at run time.
    import py_compile

    compileall.compile_dir(str(site), quiet=1, workers=2,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)


def tree_layer(cache: Path, name: str, fill) -> Path:
    """A layer tar of the tree ``fill(root)`` writes, root-owned, times zeroed (reproducible)."""
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        fill(root)
        out = cache / f"{name}.tar"
        with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(root.rglob("*")):
                info = tar.gettarinfo(str(path), arcname=str(path.relative_to(root)))
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                if info.isreg():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return out


def file_layer(cache: Path, name: str, files: dict[str, tuple[bytes, int]]) -> Path:
    out = cache / f"{name}.tar"
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for arcname, (data, mode) in sorted(files.items()):
            info = tarfile.TarInfo(arcname)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    return out


# ---- OCI archive ------------------------------------------------------------------------------
def _digest_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest(), path.stat().st_size


def oci_archive(out: Path, ref: str, layers: list[Path], config: dict) -> Path:
    """An OCI image layout as one tar, named ``ref`` for containerd's import."""
    layer_descs = []
    for layer in layers:
        digest, size = _digest_file(layer)
        layer_descs.append((layer, {"mediaType": MEDIA_LAYER, "digest": digest, "size": size}))
    image_config = {
        "architecture": "amd64", "os": "linux", "config": config,
        "rootfs": {"type": "layers", "diff_ids": [d["digest"] for _, d in layer_descs]},
        "history": [{"created_by": f"airflow-adaptive tools/node/images.py: {p.name}"} for p, _ in layer_descs],
    }
    config_bytes = json.dumps(image_config, sort_keys=True).encode()
    config_desc = {"mediaType": MEDIA_CONFIG, "digest": "sha256:" + hashlib.sha256(config_bytes).hexdigest(),
                   "size": len(config_bytes)}
    manifest = {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST, "config": config_desc,
                "layers": [d for _, d in layer_descs]}
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    manifest_desc = {"mediaType": MEDIA_MANIFEST, "digest": "sha256:" + hashlib.sha256(manifest_bytes).hexdigest(),
                     "size": len(manifest_bytes),
                     "annotations": {"io.containerd.image.name": ref,
                                     "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1]}}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [manifest_desc]}
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        def add_bytes(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add_bytes("index.json", json.dumps(index).encode())
        add_bytes(f"blobs/sha256/{config_desc['digest'][7:]}", config_bytes)
        add_bytes(f"blobs/sha256/{manifest_desc['digest'][7:]}", manifest_bytes)
        for layer, desc in layer_descs:
            tar.add(str(layer), arcname=f"blobs/sha256/{desc['digest'][7:]}")
    tmp.rename(out)
    return out


def _source_hash(*extra: str) -> str:
    h = hashlib.sha256("\n".join(extra).encode())
    for path in sorted((REPO / "airflow_adaptive").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            h.update(str(path.relative_to(REPO)).encode())
            h.update(path.read_bytes())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:12]


def monitor_config() -> dict:
    return {"User": "1000:1000", "WorkingDir": "/tmp",
            "Env": ["PATH=/opt/airflow-adaptive/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    f"PYTHONPATH=/{SITE}", "PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1",
                    "NVIDIA_DRIVER_CAPABILITIES=utility"],
            "Entrypoint": ["airflow-adaptive"], "Cmd": ["-v", "monitor", "--channel", "stdout"],
            "Labels": {"org.opencontainers.image.title": "airflow-adaptive monitor"}}


def stage_config() -> dict:
    # A training image as most are: root, no USER line; python3 on PATH runs the workloads.
    config = monitor_config()
    config.pop("User")
    config["Entrypoint"], config["Cmd"] = ["python3"], []
    config["Labels"] = {"org.opencontainers.image.title": "airflow-adaptive example stage"}
    return config


def build_all(cache: Path, pause_bin: Path) -> dict[str, dict[str, str]]:
    cache.mkdir(parents=True, exist_ok=True)
    images: dict[str, dict[str, str]] = {}

    pause_archive = cache / "pause.oci.tar"
    if not pause_archive.exists():
        layer = file_layer(cache, "pause-layer", {"pause": (pause_bin.read_bytes(), 0o755)})
        oci_archive(pause_archive, PAUSE_REF, [layer], {"Entrypoint": ["/pause"], "User": "65535:65535"})
    images["pause"] = {"ref": PAUSE_REF, "archive": str(pause_archive)}

    base = base_layer(cache)
    tag = _source_hash(*MONITOR_WHEELS, base.name)
    monitor_archive = cache / f"monitor-{tag}.oci.tar"
    app = cache / f"app-{tag}.tar"
    if not monitor_archive.exists():
        if not app.exists():
            log("app layer (airflow_adaptive + monitor wheels)")
            tree_layer(cache, f"app-{tag}", app_tree)
        oci_archive(monitor_archive, f"{MONITOR_REPO}:{tag}", [base, app], monitor_config())
    images["monitor"] = {"ref": f"{MONITOR_REPO}:{tag}", "archive": str(monitor_archive)}

    # A training image built to run as a non-root user (USER 2000), with no UID in the pod: the
    # case where the operator cannot know whom the workload runs as.
    nonroot_archive = cache / f"nonroot-{tag}.oci.tar"
    if not nonroot_archive.exists():
        oci_archive(nonroot_archive, f"{NONROOT_REPO}:{tag}", [base, app], {**stage_config(), "User": "2000:2000"})
    images["nonroot"] = {"ref": f"{NONROOT_REPO}:{tag}", "archive": str(nonroot_archive)}

    science_key = hashlib.sha256(" ".join(SCIENCE_WHEELS).encode()).hexdigest()[:12]
    science = cache / f"science-{science_key}.tar"
    if not science.exists():
        log("science layer (numpy, scipy, scikit-learn)")
        tree_layer(cache, f"science-{science_key}", science_tree)
    stage_archive = cache / f"stage-{tag}-{science_key}.oci.tar"
    if not stage_archive.exists():
        oci_archive(stage_archive, f"{STAGE_REPO}:{tag}-{science_key}", [base, app, science], stage_config())
    images["stage"] = {"ref": f"{STAGE_REPO}:{tag}-{science_key}", "archive": str(stage_archive)}
    # Old versions of the per-source archives would pile up: keep the current ones only.
    for old in cache.glob("*.tar"):
        if old.name.startswith(("monitor-", "stage-", "app-", "nonroot-")) and str(old) not in {
                images["monitor"]["archive"], images["stage"]["archive"], images["nonroot"]["archive"], str(app)}:
            old.unlink()
    return images


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", required=True, type=Path)
    parser.add_argument("--pause", required=True, type=Path, help="the static pause binary")
    args = parser.parse_args()
    print(json.dumps(build_all(args.cache, args.pause)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
