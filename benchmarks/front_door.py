"""The front door under attack: the figures of the README's "Bad input" section.

    python benchmarks/front_door.py                  # payloads and kills, then print the table
    python benchmarks/front_door.py --kills 3 --payloads os.system   # a quick look

* Payloads: checkpoints whose unpickling calls code (each kind alone, and hidden
  in a real checkpoint's ``extra_state``), fed to every way a checkpoint is read:
  search, export, derive, ``--restore-file``, resume, ``fairseq-validate`` and the
  hub. Counted: commands run, and commands after which the payload had run.
* Kills: a super-net trains saving every update; it is SIGKILLed at a random
  moment, again and again, and after each kill the next run resumes. Counted:
  kills, kills after which a checkpoint file was unreadable, and resumes that
  went back behind the latest update a readable checkpoint recorded (data lost).
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN = os.path.join(ROOT, "fairseq_magic")
sys.path.insert(0, ROOT)
ARCH = "MHA2,FFN,CONV3,CONV5"
TRAIN = ["--user-dir", PLUGIN, "--task", "magic_masked_lm", "--criterion", "magic_mlm", "--arch", "magic_supernet_tiny",
         "--supernet-layers", "4", "--candidate-ops", "MHA2,FFN,CONV3,CONV5", "--encoder-embed-dim", "32",
         "--encoder-ffn-embed-dim", "64", "--tokens-per-sample", "32", "--batch-size", "8", "--optimizer", "adam",
         "--lr", "1e-3", "--cpu", "--num-workers", "0", "--log-format", "json", "--log-interval", "1",
         "--no-progress-bar", "--seed", "1"]
CALLS = {  # what a payload asks the unpickler to call, and with what
    "os.system": (os.system, "touch {marker}"),
    "builtins.exec": (exec, "open('{marker}', 'w').close()"),
    "subprocess.call": (subprocess.call, ["touch", "{marker}"]),
}


class Payload:
    def __init__(self, call, argument):
        self.call, self.argument = call, argument

    def __reduce__(self):
        return self.call, (self.argument,)


def run(cmd, **kwargs):
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, **kwargs)


def data(workdir: str) -> str:
    from fairseq_magic.data.corpus import synthetic_corpus

    synthetic_corpus(os.path.join(workdir, "train.txt"), 2000, seed=0)
    synthetic_corpus(os.path.join(workdir, "valid.txt"), 60, seed=1)
    run([sys.executable, "-m", "fairseq_cli.preprocess", "--only-source", "--trainpref", f"{workdir}/train.txt",
         "--validpref", f"{workdir}/valid.txt", "--destdir", f"{workdir}/bin", "--workers", "1"], check=True)
    return f"{workdir}/bin"


def fairseq_train(bin_dir: str, save_dir: str, *extra: str) -> list:
    return [sys.executable, "-m", "fairseq_cli.train", bin_dir, *TRAIN, "--save-dir", save_dir, *extra]


def payloads(workdir: str, bin_dir: str, kinds) -> dict:
    """Every loader, each payload alone and hidden in a real checkpoint: commands run, codes run."""
    if not kinds:
        return {"commands": 0, "ran code": 0, "refused": 0}
    supernet_dir = os.path.join(workdir, "supernet")
    run(fairseq_train(bin_dir, supernet_dir, "--max-update", "2"), check=True)
    supernet = os.path.join(supernet_dir, "checkpoint_last.pt")
    child = os.path.join(workdir, "child", "model.pt")
    run([sys.executable, "-m", "fairseq_magic.cli", "export", "--checkpoint", supernet, "--arch", ARCH, "--out", child],
        check=True)
    commands, markers = [], []
    for kind in kinds:
        call, template = CALLS[kind]
        for form in ("alone", "hidden"):
            for source, name in ((supernet, "supernet"), (child, "child")):
                marker = os.path.join(workdir, f"ran-{kind}-{form}-{name}")
                argument = [a.format(marker=marker) for a in template] if isinstance(template, list) \
                    else template.format(marker=marker)
                path = os.path.join(workdir, f"{kind}-{form}-{name}.pt")
                if form == "alone":
                    torch.save(Payload(call, argument), path)
                else:
                    state = torch.load(source, map_location="cpu", weights_only=True)
                    state["extra_state"]["note"] = Payload(call, argument)
                    torch.save(state, path)
                markers.append(marker)
                if name == "child":
                    folder = os.path.dirname(path)
                    commands.append([sys.executable, "-m", "fairseq_cli.validate", bin_dir, "--path", path, "--task",
                                     "masked_lm", "--user-dir", PLUGIN, "--cpu", "--batch-size", "8"])
                    commands.append([sys.executable, "-c", "import fairseq_magic; from fairseq_magic.models.child "
                                     "import MagicChildModel; MagicChildModel.from_pretrained("
                                     f"'{folder}', checkpoint_file='{os.path.basename(path)}', "
                                     f"data_name_or_path='{bin_dir}')"])
                    continue
                resume = os.path.join(workdir, f"resume-{kind}-{form}")
                os.makedirs(resume)
                shutil.copy(path, os.path.join(resume, "checkpoint_last.pt"))
                magic = [sys.executable, "-m", "fairseq_magic.cli"]
                commands += [
                    [*magic, "search", "--checkpoint", path, "--out", os.path.join(workdir, "s"), "--data", bin_dir],
                    [*magic, "export", "--checkpoint", path, "--arch", ARCH, "--out", os.path.join(workdir, "x.pt")],
                    [*magic, "derive", path, "-o", os.path.join(workdir, "a.json")],
                    fairseq_train(bin_dir, os.path.join(workdir, f"r-{kind}-{form}"), "--max-update", "4",
                                  "--restore-file", path),
                    fairseq_train(bin_dir, resume, "--max-update", "4"),
                ]
    refused = 0
    for i in range(0, len(commands), 2):  # two at a time
        procs = [subprocess.Popen(c, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for c in commands[i:i + 2]]
        for proc in procs:
            err = proc.communicate(timeout=600)[1].strip().splitlines()
            refused += bool(proc.returncode and err and err[-1].startswith("fairseq-magic: error: refusing to load"))
    return {"commands": len(commands), "ran code": sum(os.path.exists(m) for m in markers), "refused": refused}


def recorded(save_dir: str) -> dict:
    """The update each checkpoint file records; None for a file that does not load."""
    from fairseq_magic.checkpoint import readable, recorded_update

    files = {}
    for name in sorted(os.listdir(save_dir)):
        path = os.path.join(save_dir, name)
        if name.endswith(".pt"):
            files[name] = recorded_update(path) if readable(path) else None
    return files


def kills(workdir: str, bin_dir: str, count: int, seed: int) -> dict:
    """Kill a run that saves every update at random moments; resume after each kill."""
    rng = random.Random(seed)
    save_dir = os.path.join(workdir, "killed")
    train = fairseq_train(bin_dir, save_dir, "--save-interval-updates", "1", "--keep-interval-updates", "3",
                          "--max-update", "100000", "--no-epoch-checkpoints")
    unreadable = went_back = mid_save = 0
    latest = 0
    for _ in range(count):
        proc = subprocess.Popen(train, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        resumed_at = None
        started = time.time()
        for line in proc.stdout:  # the first update this run trains tells where it resumed
            if '"num_updates"' in line and "train_inner" in line:
                resumed_at = int(json.loads(line[line.index("{"):])["num_updates"])
                break
        time.sleep(rng.uniform(0.0, 1.5))  # a random moment, saves included (one per update)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if resumed_at is not None and resumed_at <= latest:
            went_back += 1
        mid_save += any(name.endswith(".tmp") for name in os.listdir(save_dir))  # killed while writing a file
        files = recorded(save_dir)
        unreadable += any(u is None for u in files.values())
        latest = max([u for u in files.values() if u is not None], default=latest)
        if time.time() - started > 300:
            break
    return {"kills": count, "unreadable afterwards": unreadable, "resumes behind a readable checkpoint": went_back,
            "killed while saving": mid_save, "updates reached": latest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=24)
    parser.add_argument("--payloads", default=",".join(CALLS), help=f"kinds, comma-separated: {', '.join(CALLS)}")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        bin_dir = data(workdir)
        attack = payloads(workdir, bin_dir, [k for k in args.payloads.split(",") if k])
        killed = kills(workdir, bin_dir, args.kills, args.seed)
    print("| attack | tried | harm |")
    print("|---|---|---|")
    print(f"| checkpoints that call code, through every loader | {attack['commands']} commands | "
          f"{attack['ran code']} ran code ({attack['refused']} refused with one line) |")
    print(f"| SIGKILL while training and saving every update | {killed['kills']} kills "
          f"({killed['killed while saving']} while a file was being written; {killed['updates reached']} updates) | "
          f"{killed['unreadable afterwards']} left an unreadable checkpoint; "
          f"{killed['resumes behind a readable checkpoint']} resumes went back |")


if __name__ == "__main__":
    main()
