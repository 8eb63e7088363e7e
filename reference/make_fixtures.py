"""Generate the parity fixtures under crates/inversed-mixup/tests/fixtures (run once; never needed by CI).

Usage: python reference/make_fixtures.py ENCODER_DIR GGUF_FILE
Needs: torch, transformers, gguf, sentence-transformers, numpy.
"""
import json, os, sys
import torch

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "inversed-mixup", "tests", "fixtures")
enc_dir, gguf_path = sys.argv[1], sys.argv[2]
torch.set_grad_enabled(False)

SENTENCES = [
    "The cat sat on the mat.",
    "A gripping, beautifully acted film that never lets go.",
    "What is the capital of Australia?",
    "He was born in 1633 in Naples, Italy, and became a priest.",
    "this movie was terrible , boring and far too long",
    "Quantum entanglement links particles across large distances.",
    "I can't believe it's not butter!",
    "Zürich's café served crème brûlée — naïvely priced at €12.50.",
    "   leading and trailing spaces   ",
    "Stocks fell 3.2% on Tuesday after the report.",
]

# Encoder: sentence-transformers applies Transformer -> mean Pooling -> Normalize (modules.json).
from sentence_transformers import SentenceTransformer
st = SentenceTransformer(enc_dir, device="cpu")
emb = st.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=False)
ids = [st.tokenizer(s)["input_ids"] for s in SENTENCES]
json.dump({"sentences": SENTENCES, "input_ids": ids, "embeddings": emb.tolist()},
          open(os.path.join(OUT, "encoder.json"), "w"))

# LLM tokenizer, loaded by transformers from the same GGUF metadata.
from transformers import AutoTokenizer, AutoModelForCausalLM
d, f = os.path.dirname(gguf_path), os.path.basename(gguf_path)
tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
TOK_CASES = SENTENCES + [
    "", " ", "  two  spaces", "\ttab\nnewline\r\n", "emoji 🤖🚀 and CJK 漢字かな",
    "numbers 1234567 and 3.14159", "Given the embedding , generate the original sentence:",
    "don't won't it's I'm we'll", "<|im_start|>user", "ÀÉÎÕÜ ß ø",
]
tok_ids = [tok(s, add_special_tokens=False)["input_ids"] for s in TOK_CASES]
json.dump({"texts": TOK_CASES, "ids": tok_ids}, open(os.path.join(OUT, "tokenizer.json"), "w"))

# Logits: transformers dequantises the GGUF to f32 and un-permutes Q/K for rotate-half RoPE.
model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32).eval()
PROMPTS = ["Given the embedding , generate the original sentence: The cat sat on the mat.",
           "Paris is the capital of",
           "1 2 3 4 5"]
PROBE = list(range(0, 49152, 997))  # a fixed spread of vocabulary ids
rows = []
for p in PROMPTS:
    ids = tok(p, add_special_tokens=False)["input_ids"]
    logits = model(torch.tensor([ids])).logits[0]
    rows.append({"prompt": p, "ids": ids,
                 "argmax": logits.argmax(-1).tolist(),
                 "logsumexp": torch.logsumexp(logits, -1).tolist(),
                 "probe": logits[:, PROBE].tolist()})
json.dump({"probe_ids": PROBE, "rows": rows}, open(os.path.join(OUT, "logits.json"), "w"))
print("ok")
