# benchmarks/plot.gp - the pictures of `make bench`, drawn from the CSV
# files it wrote into benchmarks/results/ (run from the top directory).
set datafile separator ","
set terminal pngcairo size 960,600 noenhanced font "DejaVu Sans,11"
set key top left
set grid

# Round-trip latency by percentile, 32-byte messages, log-log: the x axis
# counts nines (x = 1 / (1 - p)), so 50, 90, 99, 99.9, 99.99 are evenly
# spaced.
set output "benchmarks/results/latency_32.png"
set title "Round trip between two processes, 32 B (lower is better)"
set logscale xy
set xlabel "percentile"
set ylabel "ns"
set xtics ("50" 2, "90" 10, "99" 100, "99.9" 1000, "99.99" 10000)
f = "benchmarks/results/latency.csv"
sel(w, b) = (stringcolumn(1) eq w && $2 == b && $3 < 100) ? 1 / (1 - $3 / 100) : 1/0
plot f using (sel("floor", 8)):4 with linespoints lw 2 title "floor (cache line, 8 B)", \
     f using (sel("floor2", 32)):4 with linespoints title "floor2 (a line each way)", \
     f using (sel("ring", 32)):4 with linespoints title "minimal ring (ring.h)", \
     f using (sel("shmbus", 32)):4 with linespoints lw 2 title "shmbus", \
     f using (sel("floor/turns", 8)):4 with linespoints title "floor, taking turns with shmbus", \
     f using (sel("shmbus/turns", 32)):4 with linespoints lw 2 title "shmbus, taking turns with the floor", \
     f using (sel("floor@100k", 8)):4 with linespoints title "floor at 100 K/s (from intended time)", \
     f using (sel("shmbus@100k", 32)):4 with linespoints title "shmbus at 100 K/s (from intended time)", \
     f using (sel("pipe", 32)):4 with linespoints title "pipe", \
     f using (sel("unix", 32)):4 with linespoints title "unix socket", \
     f using (sel("mq", 32)):4 with linespoints title "POSIX mq", \
     f using (sel("zmq", 32)):4 with linespoints title "ZeroMQ ipc"

# Throughput by message size, one producer process to one subscriber
# process, every message copied in and copied out.
set output "benchmarks/results/throughput.png"
set title "Throughput, one producer to one subscriber (higher is better)"
set logscale x 2
set logscale y
set xlabel "message bytes"
set ylabel "GB/s of payload"
set xtics ("8" 8, "32" 32, "256" 256, "1K" 1024, "4K" 4096, "16K" 16384, "64K" 65536)
set xrange [6:90000]
# One series per file so that each is drawn as a line.
t(b, m) = sprintf("< grep '^%s,%s,' benchmarks/results/throughput.csv", b, m)
plot t("memcpy", "-") using 3:7 with linespoints title "memcpy (one process)", \
     t("copy2p", "-") using 3:7 with linespoints lw 2 title "two-process copy", \
     t("copy2p32", "-") using 3:7 with linespoints title "two-process copy, count per 32", \
     t("shmbus", "publish") using 3:7 with linespoints title "shmbus publish", \
     t("shmbus", "claim") using 3:7 with linespoints title "shmbus claim/commit", \
     t("shmbus", "batch") using 3:7 with linespoints lw 2 title "shmbus batch of 32"
