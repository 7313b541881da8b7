#!/usr/bin/env bash
# One GPU check in under 8 minutes, ending with one summary table (part | status | seconds |
# key figure):
#   cuda-tests    the tests that skip without CUDA ("needs CUDA"), selected by file and -k cuda
#   sample-speed  benchmarks/sample_speed.py: IAF/SCF against the LSTM at T = 288, B = 16
#                 (the paper's speed claim)
#   train-speed   benchmarks/train_speed.py --quick (frames/s of a training step, paper sizes)
#   jsb-afaf      benchmarks/reproduce.py: a short JSB AF/AF training and its test evaluation
#
# Usage:
#   benchmarks/gpu_check.sh                         # on CUDA, the real check (about 7.5 min)
#   benchmarks/gpu_check.sh --device cpu --small    # tiny sizes: that the script runs at all
#   benchmarks/gpu_check.sh --budget 300            # overall limit in seconds (default 450)
#
# Installs nothing. Each part runs under `timeout` with the smaller of its own limit and what
# is left of the overall budget; a part that no time is left for is reported "skipped".
# Needs LNF_DATA_DIR (or ./data) for the two parts that read JSB Chorales.
# Exit status: 0 if every part passed, 1 if one failed, 2 for bad options.
set -u

DEVICE=cuda
SMALL=0
BUDGET=450
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE="${2:-}"; shift 2 || { echo "error: --device needs cpu or cuda" >&2; exit 2; } ;;
        --device=*) DEVICE="${1#*=}"; shift ;;
        --small) SMALL=1; shift ;;
        --budget) BUDGET="${2:-}"; shift 2 || { echo "error: --budget needs seconds" >&2; exit 2; } ;;
        --budget=*) BUDGET="${1#*=}"; shift ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$DEVICE" in cpu|cuda|cuda:[0-9]*) ;; *) echo "error: --device must be cpu or cuda, not '$DEVICE'" >&2; exit 2 ;; esac
case "$BUDGET" in ''|*[!0-9]*) echo "error: --budget must be a whole number of seconds, not '$BUDGET'" >&2; exit 2 ;; esac

REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO" || exit 1
PY="${PYTHON:-python}"
# This checkout's package, not whichever one an editable install points at.
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
START=$SECONDS
NAMES=() STATUSES=() TIMES=() FIGURES=()
FAILED=0

# run_part NAME LIMIT_S COMMAND...: run under timeout, log to $WORK/NAME.log, record the row.
run_part() {
    local name="$1" limit="$2"; shift 2
    local left=$((BUDGET - (SECONDS - START)))
    [ "$left" -lt "$limit" ] && limit=$left
    local status seconds=0 rc
    if [ "$limit" -le 0 ]; then
        status="skipped (budget spent)"
        FAILED=1
    else
        local t0=$SECONDS
        # --kill-after: lnf saves on SIGTERM; a part that will not stop is killed 10 s later.
        timeout --kill-after=10 "$limit" "$@" >"$WORK/$name.log" 2>&1
        rc=$?
        seconds=$((SECONDS - t0))
        case $rc in
            0) status=ok ;;
            124|137) status="TIMEOUT (${limit} s)"; FAILED=1 ;;
            *) status="FAIL (exit $rc)"; FAILED=1 ;;
        esac
        if [ "$status" != ok ]; then
            echo "--- $name: last lines of its output ---"
            tail -n 8 "$WORK/$name.log"
        fi
    fi
    NAMES+=("$name") STATUSES+=("$status") TIMES+=("$seconds") FIGURES+=("$(figure "$name")")
}

# figure NAME: the part's key figure, read from its log (empty if it did not get that far).
figure() {
    local log="$WORK/$1.log"
    [ -f "$log" ] || return 0
    case "$1" in
        cuda-tests) grep -Eo '[0-9]+ (passed|failed|skipped|error).* in ' "$log" | tail -n 1 | sed 's/ in $//' ;;
        sample-speed)  # the table row "| IAF/SCF | T | B | runs | s | speed-up | ..."
            "$PY" - "$log" <<'EOF' 2>/dev/null
import sys
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if cells[0] == "IAF/SCF" and len(cells) >= 6:
        print(f"IAF/SCF speed-up over the LSTM {cells[5]} (T={cells[1]}, B={cells[2]})")
EOF
            ;;
        train-speed)  # --small: one line; else rich's table rows "│ afaf │ params │ s/step │ fps │"
            "$PY" - "$log" "$SMALL" <<'EOF' 2>/dev/null
import re, sys
text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
if sys.argv[2] == "1":
    found = re.findall(r"peak memory [0-9.]+ GiB", text)
    print(found[-1] if found else "")
else:  # box-drawing or, off a UTF-8 locale, ASCII separators
    rows = [[c.strip() for c in re.split("[│|]", line)[1:-1]] for line in text.splitlines()]
    print(", ".join(f"{r[0]} {r[3]} frames/s" for r in rows
                    if len(r) > 3 and r[0] in ("afaf", "afscf", "iafscf", "lstm")))
EOF
            ;;
        jsb-afaf)
            "$PY" - "$WORK/jsb/results.json" <<'EOF' 2>/dev/null
import json, sys
entry = json.load(open(sys.argv[1]))["models"]["afaf"]
res = entry["evaluation"]["results"]
print(f"test NLL {res['nll_nats_per_unit']:.3f} nats/(T+1) after {entry['epochs']} epoch(s), "
      f"K={res['num_samples']}")
EOF
            ;;
    esac
}

# The tests that need CUDA: every file with a "needs (a) CUDA" skip, its tests named *cuda*.
CUDA_FILES=$(grep -rlE 'needs (a )?CUDA' tests/ | sort)
if [ "$SMALL" = 1 ]; then
    run_part cuda-tests 60 "$PY" -m pytest -q -p no:cacheprovider -rs -k cuda $CUDA_FILES
    run_part sample-speed 60 "$PY" benchmarks/sample_speed.py --device "$DEVICE" --quick \
        --lengths 16 --batch-sizes 2 --models iafscf
    run_part train-speed 60 "$PY" benchmarks/train_speed.py --device "$DEVICE" --threads 1 \
        --memory jsb_chorales
    run_part jsb-afaf 60 "$PY" benchmarks/reproduce.py --dataset jsb_chorales --models afaf \
        --device "$DEVICE" --epochs 1 --kl-initial-zero 0 --kl-rampup 0 --samples 2 \
        --eval-batch-size 80 --out "$WORK/jsb" -- --hidden-size 8 --latent-dim 4 \
        --flow-layers 1 --batch-size 100 --nll-every 0
else
    run_part cuda-tests 60 "$PY" -m pytest -q -p no:cacheprovider -rs -k cuda $CUDA_FILES
    run_part sample-speed 90 "$PY" benchmarks/sample_speed.py --device "$DEVICE" \
        --lengths 288 --batch-sizes 16 --models iafscf --repeats 3
    run_part train-speed 150 "$PY" benchmarks/train_speed.py --device "$DEVICE" --quick
    # 3 epochs with a 1 + 1 schedule, so that best.pt exists; the paper's sizes and K = 100.
    run_part jsb-afaf 150 "$PY" benchmarks/reproduce.py --dataset jsb_chorales --models afaf \
        --device "$DEVICE" --epochs 3 --kl-initial-zero 1 --kl-rampup 1 --samples 100 \
        --out "$WORK/jsb" -- --nll-every 0
fi
# Without CUDA the CUDA tests skip: a pass on CPU, a failure of the check on a GPU.
if [ "${DEVICE%%:*}" = cuda ] && grep -q "skipped" "$WORK/cuda-tests.log"; then
    STATUSES[0]="FAIL (skipped: no CUDA?)"
    FAILED=1
fi

echo
printf '%s\n' "gpu_check: device $DEVICE$([ "$SMALL" = 1 ] && echo ', small settings'), $((SECONDS - START)) s of a ${BUDGET} s budget, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
printf '| %-12s | %-24s | %7s | %s\n' part status seconds "key figure |"
printf '| %-12s | %-24s | %7s | %s\n' ------------ ------------------------ ------- "--- |"
for i in "${!NAMES[@]}"; do
    printf '| %-12s | %-24s | %7s | %s |\n' "${NAMES[$i]}" "${STATUSES[$i]}" "${TIMES[$i]}" \
        "${FIGURES[$i]:-–}"
done
exit $FAILED
