set -e
which gcc python3 || true
python3 -c "import numpy, cffi; print('numpy', numpy.__version__)" 2>&1 | tail -1 || true
nproc; grep -m1 "model name" /proc/cpuinfo
for v in csrc/reduce.c .bench_variants/reduce_quad.c .bench_variants/reduce_lists.c; do
  gcc -std=c11 -O2 -D_GNU_SOURCE -Icsrc -w benchmarks/reduce_bench.c $v -lm -o /tmp/rb_$(basename $v .c)
done
for k in 1 2; do for v in reduce reduce_quad reduce_lists; do echo "== $v"; /tmp/rb_$v 1000000 15 | tail -3; done; done
