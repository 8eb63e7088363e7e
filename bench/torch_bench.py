"""PyTorch side of the benchmark: the same workloads as `cargo run --release --example bench`.

Usage: python bench/torch_bench.py WORKLOAD ENCODER_DIR GGUF_FILE [ADAPTOR]
WORKLOAD: train | train-lora | gen1 | gen16 | encode | finetune | correct | augment | mix-align
(the last three load the shipped ADAPTOR with its LoRA deltas through experiments/gpu/stage1_torch.py,
whose greedy decodes equal `imix invert`'s). Prints one JSON line (median seconds, throughput,
peak RSS). Needs torch, transformers, gguf, accelerate, sentence-transformers and (train-lora)
peft. Never needed by CI.
"""
import json, os, resource, statistics, sys, time
import torch

torch.set_num_threads(os.cpu_count())
torch.manual_seed(0)
work, enc_dir, gguf = sys.argv[1], sys.argv[2], sys.argv[3]
K, T, B, HID = 4, 32, 8, 1024
TEMPLATE = "Given the embedding <soft>, generate the original sentence:"


def timed(fn, warmup, runs):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), ts


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if work == "peak":
    # Practical f32 peak of this CPU: a large square matmul through PyTorch's BLAS.
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    med, ts = timed(lambda: a @ b, 2, 5)
    print(json.dumps({"side": "pytorch", "workload": work, "median_s": med, "runs": ts, "gflops": 2 * 2048**3 / med / 1e9, "simd": torch.backends.cpu.get_cpu_capability()}))
    sys.exit()

if work == "encode":
    from sentence_transformers import SentenceTransformer
    st = SentenceTransformer(enc_dir, device="cpu")
    sents = [f"sentence number {i} is about the weather in a small town near the river." for i in range(64)]
    with torch.no_grad():
        med, ts = timed(lambda: st.encode(sents, batch_size=64), 2, 9)
    print(json.dumps({"side": "pytorch", "workload": work, "median_s": med, "runs": ts, "items_per_s": 64 / med, "peak_rss_mb": peak_mb()}))
    sys.exit()

if work == "finetune":
    # One step of the fine-tuned task model: every encoder weight and a 2-class linear head on 16
    # sentences, soft-label cross-entropy, AdamW (encoder 5e-5 / decay 0.01, head 1e-3 / 1e-4).
    # Dropout off, as on the Rust side (it has none).
    from sentence_transformers import SentenceTransformer
    st = SentenceTransformer(enc_dir, device="cpu").eval()
    head = torch.nn.Linear(384, 2)
    sents = [f"sentence number {i} is about the weather in a small town near the river." for i in range(16)]
    feats = st.tokenize(sents)
    y = torch.tensor([[1.0, 0.0] if i % 2 == 0 else [0.0, 1.0] for i in range(16)])
    opt = torch.optim.AdamW([{"params": st.parameters(), "lr": 5e-5, "weight_decay": 0.01},
                             {"params": head.parameters(), "lr": 1e-3, "weight_decay": 1e-4}])

    def step():
        h = st(dict(feats))["sentence_embedding"]
        loss = torch.nn.functional.cross_entropy(head(h), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    med, ts = timed(step, 2, 9)
    print(json.dumps({"side": "pytorch", "workload": work, "median_s": med, "runs": ts, "peak_rss_mb": peak_mb()}))
    sys.exit()

if work in ("correct", "augment", "mix-align"):
    # The same work as the Rust side's shipped_bench, on the same 16 sentences.
    import types
    from sentence_transformers import SentenceTransformer
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, "..", "experiments", "gpu"))
    import stage1_torch
    inv = stage1_torch.load(types.SimpleNamespace(gguf=gguf, adaptor=sys.argv[4]), "cpu")
    st = SentenceTransformer(enc_dir, device="cpu").eval()
    sents = open(os.path.join(here, "sentences.txt")).read().splitlines()
    lambdas = torch.tensor([[0.05, 0.3, 0.5, 0.7, 0.95][i % 5] for i in range(16)]).unsqueeze(1)
    embed = lambda texts: st.encode([t or " " for t in texts], batch_size=64, convert_to_tensor=True, normalize_embeddings=False)

    def mix(a, b, lam):
        return torch.nn.functional.normalize(lam * a + (1 - lam) * b, dim=-1)

    if work == "correct":
        def correct(h, n=16):
            # correct:16 as method::invert: each round decodes from the previous input moved by
            # 1/n of (h - embed(output)), rescaled to h's norm; the output closest to h is kept.
            inp, best, best_cos = h, None, None
            for r in range(n):
                if r:
                    moved = inp + (h - e) / n
                    inp = moved / moved.norm(dim=-1, keepdim=True).clamp_min(1e-12) * h.norm(dim=-1, keepdim=True)
                out = inv.greedy(inp)
                e = embed(out)
                cos = torch.nn.functional.cosine_similarity(h, e, dim=-1)
                if best is None:
                    best, best_cos = list(out), cos
                else:
                    for i in range(len(out)):
                        if cos[i] > best_cos[i]:
                            best[i], best_cos[i] = out[i], cos[i]
            return best

        with torch.no_grad():
            h = embed(sents)
            out = []
            med, ts = timed(lambda: out.append(correct(h)), 0, 2)  # 256 decodes a call
        print(out[-1], file=sys.stderr)  # to compare with the Rust side's decodes
        print(json.dumps({"side": "pytorch", "workload": work, "median_s": med, "runs": ts, "items_per_s": 16 / med, "peak_rss_mb": peak_mb()}))
    elif work == "augment":
        head = torch.nn.Linear(384, 2)

        def augment():
            hm = mix(embed(sents), embed(sents[::-1]), lambdas)
            rows = inv.greedy(hm)
            torch.softmax(head(embed(rows)), -1)
            return rows

        with torch.no_grad():
            out = []
            med, ts = timed(lambda: out.append(augment()), 1, 5)
        print(out[-1], file=sys.stderr)  # to compare with the Rust side's decodes
        print(json.dumps({"side": "pytorch", "workload": work, "median_s": med, "runs": ts, "items_per_s": 16 / med, "peak_rss_mb": peak_mb()}))
    else:
        with torch.no_grad():
            h, hb = embed(sents[:8]), embed(sents[8:])
            x = torch.cat([mix(h[:4], hb[:4], lambdas[1:5]), h[4:]])
        targets = [inv.tok(t, add_special_tokens=False)["input_ids"] for t in sents[:8]]
        opt = torch.optim.AdamW(inv.trainable(), lr=1e-4, weight_decay=0.01)

        def step():
            loss = inv.loss(x, targets)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(inv.trainable(), 1.0)
            opt.step()

        med, ts = timed(step, 2, 9)
        print(json.dumps({"side": "pytorch", "workload": work, "median_s": med, "runs": ts, "peak_rss_mb": peak_mb()}))
    sys.exit()

from transformers import AutoModelForCausalLM, AutoTokenizer
d, f = os.path.dirname(gguf), os.path.basename(gguf)
tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32).eval()
for p in model.parameters():
    p.requires_grad_(False)
H = model.config.hidden_size
pre, suf = TEMPLATE.split("<soft>")
pre_ids = tok(pre.rstrip(), add_special_tokens=False)["input_ids"]
suf_ids = tok(suf, add_special_tokens=False)["input_ids"]
emb = model.get_input_embeddings()
adaptor = torch.nn.Sequential(torch.nn.Linear(384, HID), torch.nn.GELU(), torch.nn.Linear(HID, K * H))


def prompt(h):
    n = h.shape[0]
    soft = adaptor(h).view(n, K, H)
    pe = emb(torch.tensor(pre_ids)).unsqueeze(0).expand(n, -1, -1)
    se = emb(torch.tensor(suf_ids)).unsqueeze(0).expand(n, -1, -1)
    return torch.cat([pe, soft, se], 1)


if work == "train-lora":
    # Rank-16 LoRA (alpha 32) on every projection of every layer, trained with the adaptor (peft).
    import peft
    cfg = peft.LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = peft.get_peft_model(model, cfg).base_model.model

if work in ("train", "train-lora"):
    g = torch.Generator().manual_seed(0)
    h = torch.nn.functional.normalize(torch.randn(B, 384, generator=g), dim=-1)
    tgt = torch.randint(100, 40000, (B, T), generator=g)
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    assert (work == "train-lora") == bool(lora) and all(p.requires_grad for p in lora)
    opt = torch.optim.AdamW(list(adaptor.parameters()) + lora, lr=1e-3)
    P = len(pre_ids) + K + len(suf_ids)

    def step():
        x = torch.cat([prompt(h), emb(tgt[:, :-1])], 1)
        hid = model.model(inputs_embeds=x).last_hidden_state
        logits = model.lm_head(hid[:, P - 1:P - 1 + T])  # only target positions, as the Rust side
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()

    med, ts = timed(step, 2, 9)
    print(json.dumps({"side": "pytorch", "workload": work, "median_s": med, "runs": ts, "peak_rss_mb": peak_mb()}))
else:
    b = 1 if work == "gen1" else 16
    g = torch.Generator().manual_seed(0)
    h = torch.nn.functional.normalize(torch.randn(b, 384, generator=g), dim=-1)
    with torch.no_grad():
        x = prompt(h)
        run = lambda: model.generate(inputs_embeds=x, attention_mask=torch.ones(x.shape[:2], dtype=torch.long),
                                     max_new_tokens=32, min_new_tokens=32, do_sample=False, pad_token_id=tok.eos_token_id)
        med, ts = timed(run, 1, 5)
    print(json.dumps({"side": "pytorch", "workload": work, "median_s": med, "runs": ts, "tokens_per_s": b * 32 / med, "peak_rss_mb": peak_mb()}))
