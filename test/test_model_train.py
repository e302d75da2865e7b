"""gnesf-train gnesf: tiny single-process run + resume, and a 2-process DDP (gloo) run via torchrun."""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from gnesf_ros.cli.train import main as train_cli
from gnesf_ros.model.gnesf import GNeSF

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "config" / "model_train_tiny.yaml")


def test_train_checkpoints_and_resumes(tmp_path, capsys):
    out = tmp_path / "g.pt"
    assert train_cli(["gnesf", "--config", TINY, "--out", str(out), "--scenes", "boxes", "--steps", "2"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["steps"] == 2 and out.is_file()
    for suffix in (".state.pt", ".loss.png", ".log.jsonl"):
        assert (tmp_path / ("g.pt" + suffix)).stat().st_size > 0
    assert train_cli(["gnesf", "--config", TINY, "--out", str(out), "--scenes", "boxes", "--steps", "3", "--resume"]) == 0
    lines = (tmp_path / "g.pt.log.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3]
    assert [json.loads(x)["phase"] for x in lines][0] == "geometry"
    model = GNeSF.load(out)
    assert model.cfg.volume_size_vox == 32  # architecture of the tiny config travels with the weights
    state = torch.load(tmp_path / "g.pt.state.pt", weights_only=False)
    assert state["step"] == 3


def test_resume_without_state_is_a_user_error(tmp_path, capsys):
    rc = train_cli(["gnesf", "--config", TINY, "--out", str(tmp_path / "none.pt"), "--scenes", "boxes", "--resume"])
    assert rc == 2 and "no training state" in capsys.readouterr().err


def test_ddp_two_processes_gloo(tmp_path):
    out = tmp_path / "ddp.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "gnesf_ros.cli.train", "gnesf", "--config", TINY, "--out", str(out), "--scenes", "boxes", "--steps", "2"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads([x for x in proc.stdout.splitlines() if x.startswith("{")][-1])
    assert summary["world_size"] == 2
    ckpt = torch.load(out, weights_only=False)
    assert ckpt["meta"]["world_size"] == 2 and ckpt["meta"]["step"] == 2
