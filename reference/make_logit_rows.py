"""Full logit rows for the parity test (crates/inversed-mixup/tests/fixtures/logit_rows.safetensors).

logits.json probes 50 fixed ids per position; this stores every one of the 49,152 logits at the
last position of each prompt of logits.json, so that the test checks whole rows. Run once; never
needed by CI.

Usage: python reference/make_logit_rows.py GGUF_FILE
Needs: torch, transformers, accelerate, gguf, safetensors.
"""
import json, os, sys
import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer, AutoModelForCausalLM

FIX = os.path.join(os.path.dirname(__file__), "..", "crates", "inversed-mixup", "tests", "fixtures")
gguf_path = sys.argv[1]
torch.set_grad_enabled(False)
d, f = os.path.dirname(gguf_path), os.path.basename(gguf_path)
tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32).eval()
prompts = [r["prompt"] for r in json.load(open(os.path.join(FIX, "logits.json")))["rows"]]
rows = []
for p in prompts:
    ids = tok(p, add_special_tokens=False)["input_ids"]
    rows.append(model(torch.tensor([ids])).logits[0, -1])
save_file({"last_position": torch.stack(rows).contiguous()}, os.path.join(FIX, "logit_rows.safetensors"),
          metadata={"prompts": json.dumps(prompts), "transformers": __import__("transformers").__version__,
                    "torch": torch.__version__})
print("ok", torch.stack(rows).shape)
