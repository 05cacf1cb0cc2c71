"""Build the node image ``ukehi-node:<version>`` (and ``:latest``), with or without a registry.

Steps, each skipped when its result is already there:

1. the project's wheel (``pip wheel --no-deps``), built from a copy of the sources
   in a temporary directory, so parallel builds never share a ``build/`` folder;
2. the base image: a registry image (``--base``, default ``python:3.11-slim-bookworm``)
   or the offline base ``ukehi-base:bookworm`` made by ``docker/build-base-image``
   (mmdebstrap + ``docker import``) when ``--offline`` is given, or when the
   registry base is missing and no registry answers;
3. the node image from ``docker/Dockerfile`` on a small staged build context (the
   Dockerfile, the wheel, ``docker/ukehi-start``): never the whole repository.

The cache key is a hash of what goes into the image: the wheel's *contents*
(member names and bytes; zip timestamps change on every build and are left
out), the Dockerfile, the start script and the base image's id. It is stored
as the image label ``ukehi.image.key``; a build whose key matches the existing
image is skipped.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKER_DIR = REPO_ROOT / "docker"
NODE_IMAGE_REPO = "ukehi-node"
REGISTRY_BASE = "python:3.11-slim-bookworm"
OFFLINE_BASE = "ukehi-base:bookworm"
KEY_LABEL = "ukehi.image.key"
VERSION_LABEL = "ukehi.version"
SOURCE_LABEL = "ukehi.source"  # hash of the Python sources the image's wheel was built from
_PACKAGES = ("ukehi", "harness", "nemeses", "workloads", "checkers")
# What the wheel is built from: the packages the pyproject's find includes, and its metadata files.
_SOURCE_ITEMS = ("pyproject.toml", "README.md", "ukehi", "harness", "nemeses", "workloads", "checkers")
_BASE_SCRIPT_TIMEOUT = 900.0  # mmdebstrap downloads and unpacks ~100 packages
_WHEEL_TIMEOUT = 300.0

Say = Callable[[str], None]


class ImageError(RuntimeError):
    """The image could not be built; the message says what to do next."""


def project_version() -> str:
    from ukehi import __version__

    return __version__


def node_image_tag(version: str | None = None) -> str:
    return f"{NODE_IMAGE_REPO}:{version or project_version()}"


def docker_client(timeout: int = 120) -> Any:
    """A client for the local Docker engine; ImageError saying how to start one if none answers."""
    try:
        import docker
    except ImportError as err:  # pragma: no cover - docker is a declared dependency
        raise ImageError(f"the `docker` Python package is missing ({err}): pip install docker") from None
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception as err:  # noqa: BLE001 - DockerException, connection errors, permission errors
        raise ImageError(f"no Docker engine answers ({err}): start it (e.g. `systemctl start docker` or "
                         "`dockerd &`), check DOCKER_HOST and your permission on /var/run/docker.sock, "
                         "or use --backend local") from None
    return client


def source_hash(root: Path = REPO_ROOT) -> str:
    """Hash of every ``.py`` file of the packages under ROOT: cheap (no wheel build), and the
    same for a source tree and an installed copy, so a run can tell a stale image."""
    h = hashlib.sha256()
    for package in _PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            h.update(str(path.relative_to(root)).encode() + b"\0")
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:24]


def source_hash_of_wheel(wheel: Path) -> str:
    """:func:`source_hash` of the sources inside WHEEL (what the image really carries)."""
    with tempfile.TemporaryDirectory(prefix="ukj-wheel-x-") as tmp:
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(tmp)
        return source_hash(Path(tmp))


# -- the wheel ---------------------------------------------------------------------

def _copy_sources(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for item in _SOURCE_ITEMS:
        src = REPO_ROOT / item
        if src.is_dir():
            shutil.copytree(src, dest / item, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dest / item)


def build_wheel(out_dir: Path, say: Say = print) -> Path:
    """Build the project's wheel into OUT_DIR and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("ukehi_jepsen-*.whl"):
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="ukj-wheel-src-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        _copy_sources(src)
        say("image: building the project wheel")
        # First without build isolation (no index needed when setuptools can build wheels),
        # then with it (pip fetches setuptools/wheel from the package index).
        attempts = [["--no-build-isolation"], []]
        errors: list[str] = []
        for extra in attempts:
            cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q",
                   *extra, "-w", str(out_dir), str(src)]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_WHEEL_TIMEOUT)
            except subprocess.TimeoutExpired:
                errors.append(f"{' '.join(extra) or 'isolated'}: timed out after {_WHEEL_TIMEOUT:.0f} s")
                continue
            wheels = sorted(out_dir.glob("ukehi_jepsen-*.whl"))
            if proc.returncode == 0 and wheels:
                return wheels[-1]
            errors.append(f"{' '.join(extra) or 'isolated build'}: {proc.stderr.strip()[-600:]}")
    raise ImageError("could not build the project wheel (`pip wheel --no-deps .`); install setuptools>=70.1 "
                     "into the venv, or make the package index reachable:\n" + "\n".join(errors))


def wheel_content_hash(wheel: Path) -> str:
    """Hash of member names and bytes, in name order: equal for equal contents, whatever the zip dates."""
    h = hashlib.sha256()
    with zipfile.ZipFile(wheel) as zf:
        for name in sorted(zf.namelist()):
            h.update(name.encode() + b"\0")
            h.update(hashlib.sha256(zf.read(name)).digest())
    return h.hexdigest()


def image_key(wheel: Path, dockerfile: Path, start_script: Path, base_id: str) -> str:
    """The cache key of a node image: what goes into it, and nothing else."""
    h = hashlib.sha256()
    for part in (wheel_content_hash(wheel).encode(), dockerfile.read_bytes(), start_script.read_bytes(),
                 base_id.encode()):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:24]


# -- the base ------------------------------------------------------------------------

def image_id(client: Any, name: str) -> str | None:
    import docker.errors

    try:
        return str(client.images.get(name).id)
    except docker.errors.ImageNotFound:
        return None


def registry_reachable(client: Any, name: str) -> tuple[bool, str]:
    """Whether the engine can resolve NAME in its registry (a cheap manifest lookup, no pull)."""
    try:
        client.images.get_registry_data(name)
    except Exception as err:  # noqa: BLE001 - APIError/NotFound/connection errors all mean "no"
        return False, str(err).splitlines()[0][:300]
    return True, ""


def build_offline_base(image: str = OFFLINE_BASE, say: Say = print) -> None:
    """Run docker/build-base-image (a no-op when the image is up to date)."""
    script = DOCKER_DIR / "build-base-image"
    say(f"image: building the offline base {image} (mmdebstrap from Debian packages; ~1 min the first time)")
    try:
        proc = subprocess.run(["bash", str(script), image], capture_output=True, text=True,
                              timeout=_BASE_SCRIPT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise ImageError(f"{script} did not finish in {_BASE_SCRIPT_TIMEOUT:.0f} s; run it by hand to see "
                         "where it stalls (often the Debian mirror)") from None
    for line in proc.stdout.strip().splitlines()[-3:]:
        say(f"  {line}")
    if proc.returncode != 0:
        raise ImageError(f"{script} failed (exit {proc.returncode}):\n{proc.stderr.strip()[-1500:]}\n"
                         "It needs mmdebstrap (apt-get install mmdebstrap) and a reachable Debian mirror "
                         "(set MIRROR=...).")


def choose_base(client: Any, base: str | None, offline: bool, say: Say = print) -> str:
    """The base image to build on; builds the offline base when that is what it takes."""
    if offline:
        if base and base != OFFLINE_BASE:
            raise ImageError(f"--offline builds on {OFFLINE_BASE}; drop --base {base}, or drop --offline "
                             "to build on a registry image")
        build_offline_base(OFFLINE_BASE, say)
        return OFFLINE_BASE
    wanted = base or REGISTRY_BASE
    if image_id(client, wanted) is not None:
        return wanted
    ok, why = registry_reachable(client, wanted)
    if ok:
        return wanted
    if base and base != OFFLINE_BASE:
        raise ImageError(f"base image {base} is not here and no registry answers ({why}); "
                         "load it (docker load), or build offline with `ukehi-jepsen image build --offline`")
    say(f"image: base {wanted} is not here and no registry answers ({why}); "
        f"building the offline base {OFFLINE_BASE} instead")
    build_offline_base(OFFLINE_BASE, say)
    return OFFLINE_BASE


# -- the node image --------------------------------------------------------------------

@dataclass(frozen=True)
class BuildResult:
    tag: str
    image_id: str
    key: str
    base: str
    cached: bool


def _stage_context(ctx: Path, wheel: Path) -> None:
    (ctx / "docker").mkdir(parents=True)
    (ctx / "dist").mkdir()
    shutil.copy2(DOCKER_DIR / "Dockerfile", ctx / "docker" / "Dockerfile")
    shutil.copy2(DOCKER_DIR / "ukehi-start", ctx / "docker" / "ukehi-start")
    shutil.copy2(wheel, ctx / "dist" / wheel.name)


def build_node_image(*, offline: bool = False, base: str | None = None, tag: str | None = None,
                     wheel: Path | None = None, tag_latest: bool = True, say: Say = print,
                     client: Any = None) -> BuildResult:
    """Build (or reuse) the node image; see the module doc.

    WHEEL: a wheel built earlier (e.g. by :func:`build_wheel`) instead of a fresh one.
    TAG_LATEST: also point ``<repo>:latest`` at the result (what runs use by default).
    An image with the same key under any tag is reused: it only gets TAG.
    """
    import docker.errors

    client = client or docker_client(timeout=900)
    tag = tag or node_image_tag()
    repo = tag.rsplit(":", 1)[0]
    base_image = choose_base(client, base, offline, say)
    base_id = image_id(client, base_image) or ""  # "" when the build is to pull it from the registry
    with tempfile.TemporaryDirectory(prefix="ukj-image-") as tmp:
        ctx = Path(tmp) / "context"
        if wheel is None:
            wheel = build_wheel(Path(tmp) / "dist", say)
        key = image_key(wheel, DOCKER_DIR / "Dockerfile", DOCKER_DIR / "ukehi-start", base_id)
        try:
            existing = client.images.get(tag)
        except docker.errors.ImageNotFound:
            existing = None
        same = existing if existing is not None and existing.labels.get(KEY_LABEL) == key else None
        if same is None:
            same = next(iter(client.images.list(filters={"label": f"{KEY_LABEL}={key}"})), None)
        if same is not None:
            same.tag(repo, tag.rsplit(":", 1)[1])
            if tag_latest:
                same.tag(repo, "latest")
            say(f"image: {tag} is up to date (key {key}); nothing to build")
            return BuildResult(tag, str(same.id), key, base_image, cached=True)
        _stage_context(ctx, wheel)
        say(f"image: building {tag} on {base_image}")
        try:
            image, logs = client.images.build(
                path=str(ctx), dockerfile="docker/Dockerfile", tag=tag, rm=True, forcerm=True,
                buildargs={"BASE_IMAGE": base_image},
                labels={KEY_LABEL: key, VERSION_LABEL: project_version(),
                        SOURCE_LABEL: source_hash_of_wheel(wheel)})
        except docker.errors.BuildError as err:
            tail = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in err.build_log)[-2000:]
            raise ImageError(f"docker build of {tag} failed: {err.msg}\n{tail}\n"
                             "Without a registry, build on the offline base: "
                             "`ukehi-jepsen image build --offline`") from None
        except docker.errors.APIError as err:
            raise ImageError(f"docker build of {tag} failed: {err.explanation or err}; without a registry, "
                             "use `ukehi-jepsen image build --offline`") from None
    if tag_latest:
        image.tag(repo, "latest")
    # Node images this build (or an earlier one) left untagged: drop them rather than pile up
    # <none> images. Prune spares any image a container still uses, and only ours carry the label.
    try:
        client.images.prune(filters={"dangling": True, "label": KEY_LABEL})
    except docker.errors.APIError:
        pass  # another prune is running: the next build tidies up
    say(f"image: built {tag}{f' (also {repo}:latest)' if tag_latest else ''}, key {key}")
    return BuildResult(tag, str(image.id), key, base_image, cached=False)
