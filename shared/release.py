"""Release folders: pre-trained weights a user publishes, finds and loads in one line.

    <method>/export.py <checkpoint> --out DIR     writes, for every method, the same folder:

    model.safetensors       the backbone, under the keys of the library class it plugs into
    <extra>.safetensors     further library models where a method has them (DiRA: the whole smp U-Net)
    ssl_state.safetensors   the full self-supervised state (heads, teacher, queue, ...; no optimizer)
    config.json             architecture, input, library class + constructor kwargs, source, sha256 of each file
    README.md               a Hugging Face model card filled from the run folder

Loading (offline):
    PretrainedBackbone.from_pretrained(DIR)        huggingface_hub's PyTorchModelHubMixin contract
    torch.hub.load(repo, "<method>_backbone", source="local", weights=DIR)     hubconf.py at the root
    timm / torchvision / MONAI / UNet3D with load_state_dict(strict=True)     (see each method README)

Safety: safetensors files hold tensors only, so loading never runs code; every file's sha256 is checked
against config.json before it is parsed, and config.json can only name the library classes of BUILDERS.
Each file is written atomically (temporary file, then rename); config.json is written last.
"""

import csv
import hashlib
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub import ModelCard, ModelCardData, PyTorchModelHubMixin

from shared.checkpoint import replace_atomic

FORMAT = "ssl-medical-release/1"
MODEL_FILE = "model.safetensors"
SSL_FILE = "ssl_state.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
PROVENANCE_FILE = "provenance.txt"
REPO = Path(__file__).resolve().parents[1]


class ReleaseError(ValueError):
    """A release folder that is incomplete, altered or does not fit; the message names the file."""


# ---------------------------------------------------------------- writing

def plain_tensors(state):
    """Detached, contiguous CPU copies (safetensors refuses views that share storage)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items() if isinstance(v, torch.Tensor)}


def save_safetensors_atomic(state, path, metadata=None):
    """Write the tensors of `state` as safetensors; returns {"sha256", "bytes", "tensors"} of what was written."""
    from safetensors.torch import save
    tensors = plain_tensors(state)
    data = save(tensors, metadata={"format": "pt", **(metadata or {})})
    replace_atomic(path, lambda f: f.write(data))
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "tensors": len(tensors)}


def write_text_atomic(path, text):
    return replace_atomic(path, lambda f: f.write(text.encode("utf-8")))


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Release:
    """What a method's export hands to `write_release`.

    models: {file name: (state dict, library spec)}; MODEL_FILE first. A library spec is
        {"class": one of BUILDERS, "kwargs": {...}, "keys_not_in_file": [...]} where keys_not_in_file are the
        library model's keys the file does not hold by design (e.g. SwinUNETR's decoders), left as built.
    ssl_state: every tensor of the self-supervised model (no optimizer).
    config: method, architecture, in_channels, input (intensity, normalisation, size, spacing), ...
    card: CardInfo for README.md.
    """
    models: dict
    ssl_state: dict
    config: dict
    card: "CardInfo"


def write_release(release, out_dir):
    """Write the folder (see the module docstring); returns its path. Each file is replaced atomically;
    config.json, holding every file's sha256, comes after the weights (a reader in between gets a sha256
    error, never mixed weights), README.md last."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ReleaseError(f"{out_dir}: exists and is not a folder")
    for name, (_, spec) in release.models.items():
        _check_spec(spec, name)
    previous = _listed_files(out_dir)
    files = {name: save_safetensors_atomic(state, out_dir / name) for name, (state, _) in release.models.items()}
    files[SSL_FILE] = save_safetensors_atomic(release.ssl_state, out_dir / SSL_FILE)
    if release.card.run.provenance:  # the whole list (the card shows the first PROVENANCE_SHOWN)
        text = "".join(f"{line}\n" for line in release.card.run.provenance).encode("utf-8")
        replace_atomic(out_dir / PROVENANCE_FILE, lambda f: f.write(text))
        files[PROVENANCE_FILE] = {"sha256": hashlib.sha256(text).hexdigest(), "bytes": len(text),
                                  "lines": len(release.card.run.provenance)}
    models = {name: spec for name, (_, spec) in release.models.items()}
    config = {"format": FORMAT, **release.config, "models": models, "files": files}
    write_text_atomic(out_dir / CONFIG_FILE, json.dumps(config, indent=2, default=str) + "\n")
    write_text_atomic(out_dir / CARD_FILE, render_card(release.card, config))
    for name in previous - set(files):  # an earlier release's file this one does not have (e.g. unet.safetensors)
        (out_dir / name).unlink(missing_ok=True)
    return out_dir


def _listed_files(out_dir):
    """The files an earlier release in `out_dir` listed in its config.json (none when there is none)."""
    try:
        listed = json.loads((Path(out_dir) / CONFIG_FILE).read_text()).get("files", {})
    except (OSError, json.JSONDecodeError, AttributeError):
        return set()
    return {name for name in listed if isinstance(name, str) and "/" not in name
            and (name.endswith(".safetensors") or name == PROVENANCE_FILE)}


# ---------------------------------------------------------------- the library classes a release names

def _torchvision_resnet(arch="resnet50", **kwargs):
    """A torchvision ResNet without its classifier (fc = Identity): the pre-training trained none."""
    import torchvision
    if arch not in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
        raise ReleaseError(f"unsupported torchvision arch {arch!r}")
    model = getattr(torchvision.models, arch)(**{**kwargs, "weights": None})  # never a download
    model.fc = torch.nn.Identity()
    return model


def _smp_unet(**kwargs):
    import segmentation_models_pytorch as smp
    return smp.Unet(**{**kwargs, "encoder_weights": None})  # never a download: the release has the weights


def _monai_swinunetr(**kwargs):
    from monai.networks.nets import SwinUNETR
    return SwinUNETR(**kwargs)


def _unet3d(**kwargs):
    from shared.unet3d import UNet3D
    return UNet3D(**kwargs)


BUILDERS = {
    "torchvision.models.ResNet": _torchvision_resnet,
    "segmentation_models_pytorch.Unet": _smp_unet,
    "monai.networks.nets.SwinUNETR": _monai_swinunetr,
    "shared.unet3d.UNet3D": _unet3d,
}


def _check_spec(spec, where):
    if not isinstance(spec, dict) or spec.get("class") not in BUILDERS:
        raise ReleaseError(f"{where}: library class {spec.get('class') if isinstance(spec, dict) else spec!r} "
                           f"is not one of {sorted(BUILDERS)}")


def build_library_model(spec):
    """The (untrained) library model a release names: only the classes of BUILDERS, never an import by name."""
    _check_spec(spec, "config.json")
    return BUILDERS[spec["class"]](**spec.get("kwargs", {}))


def load_into(model, state, keys_not_in_file=(), where="weights"):
    """Strict load of `state` into `model`, except the keys the release leaves out by design, which keep
    their values (checked: exactly those are absent, nothing unexpected, every shape equal)."""
    own = model.state_dict()
    absent, unexpected = set(own) - set(state), set(state) - set(own)
    if absent != set(keys_not_in_file) & set(own) or unexpected:
        raise ReleaseError(f"{where}: does not fit {type(model).__name__}: missing "
                           f"{sorted(absent - set(keys_not_in_file))[:5]}, unexpected {sorted(unexpected)[:5]} "
                           "(another architecture or width?)")
    try:
        model.load_state_dict({**{k: own[k] for k in absent}, **state}, strict=True)
    except RuntimeError as err:
        raise ReleaseError(f"{where}: does not fit {type(model).__name__}: {str(err)[:400]}") from err
    return model


# ---------------------------------------------------------------- reading

def read_config(folder):
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise ReleaseError(f"{path}: not found (is {folder} a release folder written by <method>/export.py?)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ReleaseError(f"{path}: not valid JSON ({err})") from err
    if config.get("format") != FORMAT:
        raise ReleaseError(f"{path}: format {config.get('format')!r}, expected {FORMAT!r}")
    return config


def read_tensors(folder, name=MODEL_FILE, config=None, verify=True):
    """The tensors of one file of the release, after checking its sha256 against config.json."""
    from safetensors.torch import load
    folder = Path(folder)
    config = config or read_config(folder)
    path = folder / name
    if name not in config.get("files", {}):
        raise ReleaseError(f"{path}: not listed in {folder / CONFIG_FILE} (it lists {sorted(config.get('files', {}))})")
    if not path.is_file():
        raise ReleaseError(f"{path}: missing from the release folder")
    data = path.read_bytes()  # hashed and parsed from the same bytes
    if verify:
        got, want = hashlib.sha256(data).hexdigest(), config["files"][name]["sha256"]
        if got != want:
            raise ReleaseError(f"{path}: sha256 {got} does not match {want} in {CONFIG_FILE} "
                               "(corrupt, truncated or altered file)")
    try:
        return load(data)
    except Exception as err:  # SafetensorError: not a safetensors file
        raise ReleaseError(f"{path}: not a readable safetensors file ({err})") from err


def from_pretrained(folder, file=MODEL_FILE, map_location="cpu", verify=True):
    """The library model of `file` (a torchvision ResNet, smp.Unet, SwinUNETR or UNet3D) with the released
    weights, in eval mode. Every file is checked against its sha256 first."""
    folder = Path(folder)
    config = read_config(folder)
    if file not in config.get("models", {}):
        raise ReleaseError(f"{folder / file}: not a model file of this release "
                           f"(models: {sorted(config.get('models', {}))})")
    spec = config["models"][file]
    model = build_library_model(spec)
    load_into(model, read_tensors(folder, file, config, verify), spec.get("keys_not_in_file", ()), str(folder / file))
    return model.to(map_location).eval()


def read_ssl_state(folder, verify=True):
    """The full self-supervised state dict (to continue pre-training from a release)."""
    return read_tensors(folder, SSL_FILE, verify=verify)


class PretrainedBackbone(torch.nn.Module, PyTorchModelHubMixin, library_name="ssl-medical",
                         tags=["medical-imaging", "self-supervised"]):
    """huggingface_hub's contract: `PretrainedBackbone.from_pretrained(DIR or repo id)` returns the library
    model of the release (not a wrapper), loaded through `from_pretrained` above. Use <method>/export.py
    to write a release; `save_pretrained` is not how releases are made here."""

    def __init__(self, config: dict | None = None):
        super().__init__()
        self.config = config

    @classmethod
    def _from_pretrained(cls, *, model_id, revision=None, cache_dir=None, force_download=False,
                         local_files_only=False, token=None, map_location="cpu", file=MODEL_FILE, **unused):
        folder = model_id
        if not os.path.isdir(folder):  # a Hub repo id: fetch the folder (weights are then checked as local)
            from huggingface_hub import snapshot_download
            folder = snapshot_download(repo_id=model_id, revision=revision, cache_dir=cache_dir,
                                       force_download=force_download, local_files_only=local_files_only,
                                       token=token)
        return from_pretrained(folder, file=file, map_location=map_location)

    def _save_pretrained(self, save_directory):
        raise NotImplementedError("write a release with `python <method>/export.py <checkpoint> --out DIR`")


# ---------------------------------------------------------------- the run a checkpoint came from

def git_commit(path=REPO):
    """The commit of the code tree at `path` (plus '-dirty' with uncommitted changes), or None."""
    try:
        commit = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


PROVENANCE_FILES = ("provenance.json", "provenance.txt", "data_files.txt", "files_read.txt")


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _metrics(path):
    """(last step, wall seconds from the step_s column, last value of each probe / validation column)."""
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("step") not in (None, "")]
    last_step, wall, prev, scores = None, 0.0, None, {}
    for row in sorted(rows, key=lambda r: float(r["step"])):
        step = float(row["step"])
        if row.get("step_s") not in (None, ""):
            wall += float(row["step_s"]) * (step - (prev if prev is not None else step - 1))
            prev = step
        last_step = int(step)
        for key, value in row.items():
            if key.startswith(("probe_", "val_", "probe/", "val/")) and value not in (None, ""):
                scores[key] = float(value)
    return last_step, (wall or None), scores


@dataclass
class RunInfo:
    """What the run folder of a checkpoint recorded (each piece None / empty when it did not)."""
    folder: str | None = None
    config: dict = field(default_factory=dict)
    steps: int | None = None
    wall_time_s: float | None = None
    commit: str | None = None
    commit_source: str = ""
    scores: dict = field(default_factory=dict)       # {source: {metric: value}}
    provenance: list = field(default_factory=list)   # files the run read
    provenance_source: str = ""


def read_run(checkpoint, run_dir=None, config=None, steps=None, provenance=None):
    """Collect the card's facts from the checkpoint's run folder (default: the checkpoint's folder).

    config / steps: what the method read from the checkpoint itself (preferred to the folder's files).
    provenance: the method's list of files read, when it can tell (else a PROVENANCE_FILES file is used)."""
    checkpoint = Path(checkpoint)
    folder = Path(run_dir) if run_dir else checkpoint.parent
    info = RunInfo(folder=str(folder), config=dict(config or {}), steps=steps)
    for name in ("config.json", "run.json"):
        recorded = _read_json(folder / name) if folder.is_dir() else None
        if isinstance(recorded, dict):
            info.config = {**recorded, **info.config}
    commit = info.config.get("git_commit") or info.config.get("commit")
    info.commit, info.commit_source = ((commit, "recorded by the run") if commit else
                                       (git_commit(), "the exporting code's; the run recorded none"))
    metrics = sorted(folder.glob("*metrics*.csv")) if folder.is_dir() else []
    stem_first = sorted(metrics, key=lambda m: checkpoint.stem not in m.name)  # a per-run log first
    if stem_first and stem_first[0].stat().st_size:
        last_step, wall, scores = _metrics(stem_first[0])
        info.steps = info.steps if info.steps is not None else last_step
        info.wall_time_s = wall
        if scores:
            info.scores[f"{stem_first[0].name} (last logged value)"] = scores
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if "probe" in path.name or "eval" in path.name or path.name.startswith("results"):
            record = _read_json(path)
            if isinstance(record, dict):
                numbers = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
                if numbers:
                    info.scores[path.name] = numbers
    if provenance:
        info.provenance, info.provenance_source = list(provenance), "the data list the run was configured with"
    else:
        for name in PROVENANCE_FILES:
            path = folder / name
            if path.is_file():
                record = _read_json(path) if name.endswith(".json") else path.read_text().splitlines()
                files = record.get("files", []) if isinstance(record, dict) else record
                info.provenance = [str(f) for f in files or [] if str(f).strip()]
                info.provenance_source = name
                break
    return info


# ---------------------------------------------------------------- the model card

@dataclass
class CardInfo:
    """The model card's facts: front matter (license, tags, datasets, library_name, base_model) and body."""
    method: str                       # "DiRA"
    paper: str                        # title, venue, year
    paper_url: str
    license: str                      # a Hub licence id ("other" with license_name / license_link)
    datasets: list
    tags: list
    training_data: str                # what the data is
    intended_use: str
    limits: str
    run: RunInfo
    source: str = ""                  # checkpoint the release was made from and how it was read
    base_model: str | None = None
    license_name: str | None = None
    license_link: str | None = None


PROVENANCE_SHOWN = 200


def render_card(card, config):
    """README.md: YAML front matter from ModelCardData, then sections filled from `card.run` and `config`."""
    data = ModelCardData(license=card.license, license_name=card.license_name, license_link=card.license_link,
                         library_name="ssl-medical",
                         tags=sorted(set(card.tags) | {"medical-imaging", "self-supervised"}),
                         datasets=card.datasets, base_model=card.base_model)
    run = card.run
    lines = [f"# {card.method}: {config.get('architecture', '')} pre-trained weights", "",
             f"Self-supervised pre-training with {card.method} ([{card.paper}]({card.paper_url})), exported by "
             f"`{config.get('method')}/export.py` from {card.source or 'a checkpoint'}.", "",
             "## Files", "", "| file | what | sha256 |", "|---|---|---|"]
    for name, spec in config["models"].items():
        lines.append(f"| `{name}` | `{spec['class']}({_kwargs(spec.get('kwargs', {}))})` weights | "
                     f"`{config['files'][name]['sha256']}` |")
    ssl = config["files"][SSL_FILE]
    lines.append(f"| `{SSL_FILE}` | the self-supervised state ({ssl['tensors']} tensors: "
                 f"{config.get('ssl_state', {}).get('what', 'heads and all')}) | `{ssl['sha256']}` |")
    lines += ["", "## How to load", "", "```python", *load_lines(config), "```", "",
              "## Input", "", f"- channels: {config.get('in_channels')}"]
    lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in config.get("input", {}).items()]
    lines += ["", "## Training data", "", card.training_data, ""]
    if run.provenance:
        lines += [f"Files read ({len(run.provenance)}, from {run.provenance_source}; all of them in "
                  f"`{PROVENANCE_FILE}`):", ""]
        lines += [f"- `{p}`" for p in run.provenance[:PROVENANCE_SHOWN]]
        if len(run.provenance) > PROVENANCE_SHOWN:
            lines.append(f"- ... and {len(run.provenance) - PROVENANCE_SHOWN} more")
    else:
        lines.append("The run did not record the list of files it read.")
    lines += ["", "## Training run", "",
              f"- steps: {run.steps if run.steps is not None else 'not recorded'}",
              "- wall time: " + (f"{run.wall_time_s:.1f} s (sum of the logged step_s)" if run.wall_time_s
                                 else "not recorded"),
              f"- commit: `{run.commit or 'unknown'}` ({run.commit_source or 'not recorded'})",
              f"- run folder: `{Path(run.folder).name if run.folder else 'unknown'}`", ""]
    if run.config:
        lines += ["<details><summary>configuration</summary>", "", "```json",
                  json.dumps(run.config, indent=1, sort_keys=True, default=str), "```", "</details>", ""]
    lines += ["## Evaluation", ""]
    if run.scores:
        lines += ["| source | metric | value |", "|---|---|---|"]
        for source, scores in run.scores.items():
            lines += [f"| {source} | {k} | {v:.4g} |" for k, v in sorted(scores.items())]
    else:
        lines.append("No probe or evaluation scores were found in the run folder.")
    lines += ["", "## Intended use and limits", "", card.intended_use, "", card.limits, "",
              "Pre-trained on medical images: not a medical device, not validated for clinical use.", ""]
    model_card = ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n{{ body }}",
                                         body="\n".join(lines))
    return str(model_card)


LIBRARY_IMPORTS = {"torchvision.models.ResNet": "import timm, torchvision",
                   "segmentation_models_pytorch.Unet": "import segmentation_models_pytorch as smp",
                   "monai.networks.nets.SwinUNETR": "from monai.networks.nets import SwinUNETR",
                   "shared.unet3d.UNet3D": "from shared.unet3d import UNet3D"}


def library_line(name, spec):
    """One line that builds the library model and loads `name` into it with strict=True."""
    kwargs = dict(spec.get("kwargs", {}))
    weights = f'load_file(f"{{DIR}}/{name}")'
    if spec["class"] == "torchvision.models.ResNet":
        arch = kwargs.pop("arch")
        return [f'timm.create_model("{arch}", num_classes=0).load_state_dict({weights}, strict=True)',
                f"net = torchvision.models.{arch}(); net.fc = torch.nn.Identity(); "
                f"net.load_state_dict({weights}, strict=True)"]
    if spec["class"] == "segmentation_models_pytorch.Unet":
        return [f"smp.Unet({_kwargs(kwargs)}).load_state_dict({weights}, strict=True)"]
    if spec["class"] == "monai.networks.nets.SwinUNETR":  # the decoders are not pre-trained: keep them as built
        return [f"net = SwinUNETR({_kwargs(kwargs)}); "
                f"net.load_state_dict({{**net.state_dict(), **{weights}}}, strict=True)  # decoders as built"]
    return [f"UNet3D({_kwargs(kwargs)}).load_state_dict({weights}, strict=True)"]


def load_lines(config):
    method = config.get("method")
    lines = ["import torch", "from safetensors.torch import load_file", "from shared.release import PretrainedBackbone",
             *sorted({LIBRARY_IMPORTS[spec["class"]] for spec in config["models"].values()}), "",
             "model = PretrainedBackbone.from_pretrained(DIR)   # sha256-checked; the library model itself",
             f'model = torch.hub.load(REPO, "{method}_backbone", source="local", weights=DIR)']
    for name in config["models"]:
        if name != MODEL_FILE:
            lines.append(f'model = PretrainedBackbone.from_pretrained(DIR, file="{name}")')
    for name, spec in config["models"].items():
        lines += library_line(name, spec)
    return lines


def _kwargs(kwargs):
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


# ---------------------------------------------------------------- what every method's export.py shares

def check_against_library(state, spec, where):
    """The report of matched keys: `state` loaded into the library model with no renaming at all. Raises
    unless every tensor has its place and only the spec's keys_not_in_file are left out."""
    from shared.weights import WeightLoadError, load_pretrained
    model = build_library_model(spec)
    try:
        report = load_pretrained(model, state, prefixes=(), renames=(), drop=(), min_matched=0.0, verbose=False)
    except WeightLoadError as err:
        raise ReleaseError(f"{where}: nothing fits {spec['class']}: {err}") from err
    report.source = where
    left_out = set(report.missing) - set(spec.get("keys_not_in_file", ()))
    if left_out or report.unexpected or report.skipped_shape:
        raise ReleaseError(f"{where}: does not fit {spec['class']}({_kwargs(spec.get('kwargs', {}))}):\n{report}")
    return report


def add_release_args(parser):
    """The flags every `<method>/export.py` has besides `checkpoint` and `--out`."""
    parser.add_argument("--run_dir", default=None,
                        help="run folder the model card is filled from (default: the checkpoint's folder)")
    parser.add_argument("--license", default=None, help="Hub licence id of the weights (default: the method's)")
    parser.add_argument("--datasets", nargs="+", default=None, help="dataset names for the card's front matter")
    parser.add_argument("--trusted", action="store_true",
                        help="allow full unpickling (released checkpoints with NumPy scalars or OmegaConf objects; "
                             "only for files you trust)")
    return parser


def finish_release(release, out_dir, checkpoint, layout, args=None):
    """Check each model file against its library class, record the source and the reports, write the folder
    and print what was matched. `layout`: how the checkpoint was read (e.g. 'ours: checkpoint.pth')."""
    reports = {}
    for name, (state, spec) in release.models.items():
        report = check_against_library(state, spec, f"{checkpoint} -> {name}")
        reports[name] = {"matched": len(report.matched), "of": len(report.matched) + len(report.missing),
                         "left_as_built": report.missing}
        print(f"{name}: {report}" + (f"\n  (the {len(report.missing)} missing are not pre-trained: left as the "
                                     f"library builds them)" if report.missing else ""))
    release.config["source"] = {"checkpoint": Path(checkpoint).name, "sha256": sha256_file(checkpoint),
                                "layout": layout, "reports": reports}
    if args is not None and args.license:
        release.card.license, release.card.license_name, release.card.license_link = args.license, None, None
    if args is not None and args.datasets:
        release.card.datasets = list(args.datasets)
    release.card.source = f"`{Path(checkpoint).name}` ({layout})"
    out = write_release(release, out_dir)
    print(f"wrote {out}: {', '.join(sorted(p.name for p in out.iterdir() if not p.name.startswith('.')))}")
    return out


def publish(args, build):
    """The export CLIs' last step: `build()` -> (Release, layout) from args.checkpoint, written to args.out;
    a failure ends the command with one line naming the checkpoint."""
    try:
        release, layout = build()
        return finish_release(release, args.out, args.checkpoint, layout, args)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise cli_error(args.checkpoint, err) from None


def cli_error(checkpoint, err):
    """SystemExit for an export that failed on `checkpoint`, naming the file once."""
    return SystemExit(str(err) if str(checkpoint) in str(err) else f"{checkpoint}: {err}")
