"""Packs stage-1 training data for stage1_torch.py into one .npz: target token ids (the LLM's
tokenizer, " " + text, at most 32 tokens, as `imix align` keeps them) and MiniLM embeddings (int8
with a per-row scale; the cached `imix align` embeddings for the corpus, sentence-transformers' for
the rest, which match them to cosine 1.0000). Rows: the corpus of experiments/stage1/lora16.sh minus
its last 64 lines (those are align's held-out set, stored apart), then extra sentences
(experiments/stage1/extra_text.py), and the 50 held-out Wikipedia lines `imix invert` is scored on.

  python3 prep_data.py GGUF CORPUS_TXT CORPUS_EMB EXTRA_TXT EXTRA_EMB_NPY HELDOUT_TXT OUT.npz
"""
import sys

import numpy as np
from safetensors.numpy import load_file
from sentence_transformers import SentenceTransformer
from transformers import AutoTokenizer

gguf, corpus_txt, corpus_emb, extra_txt, extra_npy, heldout_txt, out = sys.argv[1:8]
d, f = gguf.rsplit("/", 1)
tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
ids = lambda texts: [tok(" " + t.strip(), add_special_tokens=False)["input_ids"] for t in texts]
lines = lambda p: open(p, encoding="utf-8").read().split("\n")[:-1]
corpus, ce = lines(corpus_txt), load_file(corpus_emb)["embeddings"]
extra, xe = lines(extra_txt), np.load(extra_npy)
n = len(corpus)
ci, xi = ids(corpus), ids(extra)
fits = lambda t: 0 < len(t) <= 32
train = [(ci[i], ce[i]) for i in range(n - 64) if fits(ci[i])] + [(xi[i], xe[i]) for i in range(len(extra)) if fits(xi[i])]
held = [(ci[i], ce[i]) for i in range(n - 64, n) if fits(ci[i])]
enc = SentenceTransformer(sys.argv[8] if len(sys.argv) > 8 else "all-MiniLM-L6-v2", device="cpu")
wiki = lines(heldout_txt)
we = enc.encode(wiki, normalize_embeddings=True).astype(np.float32)


def flat(rows):
    off = np.cumsum([0] + [len(t) for t, _ in rows])
    return np.concatenate([np.array(t, dtype=np.uint16) for t, _ in rows]), off.astype(np.int64)


e = np.stack([x for _, x in train]).astype(np.float32)
scale = np.abs(e).max(1) / 127.0
q = np.round(e / scale[:, None]).astype(np.int8)
tid, toff = flat(train)
hid, hoff = flat(held)
wid, woff = flat([(t, None) for t in ids(wiki)])
print(f"train {len(train)} (corpus {sum(fits(ci[i]) for i in range(n - 64))}, extra {sum(map(fits, xi))}), held {len(held)}, wiki {len(wiki)}; "
      f"int8 max error {np.abs(q * scale[:, None] - e).max():.5f}")
np.savez(out, train_q=q, train_s=scale.astype(np.float16), train_ids=tid, train_off=toff,
         held_emb=np.stack([x for _, x in held]).astype(np.float32), held_ids=hid, held_off=hoff,
         wiki_emb=we, wiki_ids=wid, wiki_off=woff)
