"""Run SCALE-Sim 3 (the ``scalesim`` package) on conv-topology rows and print its per-layer results as JSON.

This script runs under the oracle's own interpreter (``tools/scalesim_env.sh`` prints its path), not
hwsim's: scalesim 3.0.0's memory model fails on numpy >= 2.3. It imports nothing from hwsim.

Input (stdin, JSON)::

    {"rows": ["conv1, 34, 34, 3, 3, 3, 32, 1,", ...],   # SCALE-Sim conv topology rows
     "configs": [{"rows": 8, "cols": 8, "dataflow": "os"}, ...],
     "workdir": "/tmp/..."}

For every config it writes ``scale.cfg``, ``topology.csv`` and an empty layout file into the workdir,
runs scalesim's full simulation (compute + memory model, CALC bandwidth mode, no traces), and reads
its ``COMPUTE_REPORT.csv`` and ``DETAILED_ACCESS_REPORT.csv``. Output (stdout, JSON): a list, per
config, of ``{"config": ..., "seconds": ..., "layers": [{"name", "total_cycles",
"total_cycles_incl_prefetch", "stall_cycles", "ifmap_sram_reads", "filter_sram_reads",
"ofmap_sram_writes"}, ...]}`` with one entry per scalesim layer (``DP`` rows expand per channel).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
import time

CFG = """[general]
run_name = hwsim_oracle

[architecture_presets]
ArrayHeight: {rows}
ArrayWidth: {cols}
IfmapSramSzkB: {ifmap_kb}
FilterSramSzkB: {filter_kb}
OfmapSramSzkB: {ofmap_kb}
IfmapOffset: 0
FilterOffset: 10000000
OfmapOffset: 20000000
Dataflow: {dataflow}
Bandwidth: 10
ReadRequestBuffer: 32
WriteRequestBuffer: 32

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: 10
IfmapSRAMBankNum: 10
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: 10
FilterSRAMBankNum: 10
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport: false
SparseRep: ellpack_block
OptimizedMapping: false
BlockSize: 8
RandomNumberGeneratorSeed: 40

[run_presets]
InterfaceBandwidth: CALC
UseRamulatorTrace: False
"""

HEADER = "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,\n"


def _read_csv(path):
    with open(path) as fh:
        rows = [[c.strip() for c in r] for r in csv.reader(fh)]
    return rows[1:]


def _write_inputs(topo_rows, cfg, workdir):
    tag = f"{cfg['rows']}x{cfg['cols']}_{cfg['dataflow']}"
    d = os.path.join(workdir, tag)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "scale.cfg"), "w") as fh:
        fh.write(CFG.format(ifmap_kb=cfg.get("ifmap_kb", 1024), filter_kb=cfg.get("filter_kb", 1024),
                            ofmap_kb=cfg.get("ofmap_kb", 1024), **{k: cfg[k] for k in ("rows", "cols", "dataflow")}))
    with open(os.path.join(d, "topology.csv"), "w") as fh:
        fh.write(HEADER + "".join(r.rstrip() + "\n" for r in topo_rows))
    with open(os.path.join(d, "layout.csv"), "w") as fh:
        fh.write("Layer name,\n")
    return d


def run_one(topo_rows, cfg, workdir):
    """scalesim's full simulation (``scalesim.scale_sim.scalesim.run_scale``), reports parsed from CSV."""
    from scalesim.scale_sim import scalesim

    d = _write_inputs(topo_rows, cfg, workdir)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        s = scalesim(save_disk_space=True, verbose=False, config=os.path.join(d, "scale.cfg"),
                     topology=os.path.join(d, "topology.csv"), layout=os.path.join(d, "layout.csv"))
        s.run_scale(top_path=os.path.join(d, "out"))
    seconds = time.perf_counter() - t0
    rep = os.path.join(d, "out", "hwsim_oracle")
    comp = _read_csv(os.path.join(rep, "COMPUTE_REPORT.csv"))
    det = _read_csv(os.path.join(rep, "DETAILED_ACCESS_REPORT.csv"))
    names = [row[0] for row in s.topo.topo_arrays]
    layers = []
    for name, c, a in zip(names, comp, det):
        layers.append({
            "name": name,
            "total_cycles_incl_prefetch": int(float(c[1])),
            "total_cycles": int(float(c[2])),
            "stall_cycles": int(float(c[3])),
            "ifmap_sram_reads": int(float(a[3])),
            "filter_sram_reads": int(float(a[6])),
            "ofmap_sram_writes": int(float(a[9])),
        })
    return {"config": cfg, "seconds": seconds, "layers": layers}


def compute_one(topo_rows, cfg, workdir):
    """Drive scalesim's compute modules only (no memory model): cycles = demand-matrix rows - 1.

    Mirrors steps 1.1-1.4 of ``scalesim.single_layer_sim.run``. Layers are loaded through scalesim's
    own topology parser (which expands ``DP`` rows per channel); sub-layers with identical
    dimensions are simulated once and the result reused.
    """
    from scalesim.compute.operand_matrix import operand_matrix
    from scalesim.compute.systolic_compute_is import systolic_compute_is
    from scalesim.compute.systolic_compute_os import systolic_compute_os
    from scalesim.compute.systolic_compute_ws import systolic_compute_ws
    from scalesim.layout_utils import layouts
    from scalesim.scale_config import scale_config
    from scalesim.topology_utils import topologies

    d = _write_inputs(topo_rows, cfg, workdir)
    t0 = time.perf_counter()
    conf = scale_config()
    conf.read_conf_file(os.path.join(d, "scale.cfg"))
    topo = topologies()
    topo.load_arrays(topofile=os.path.join(d, "topology.csv"))
    topo.topo_calc_hyperparams()
    lay = layouts()
    lay.load_arrays(layoutfile=os.path.join(d, "layout.csv"))
    classes = {"os": systolic_compute_os, "ws": systolic_compute_ws, "is": systolic_compute_is}
    memo = {}
    layers = []
    for i, entry in enumerate(topo.topo_arrays):
        key = tuple(entry[1:])
        if key not in memo:
            with contextlib.redirect_stdout(io.StringIO()):
                om = operand_matrix()
                om.set_params(config_obj=conf, topoutil_obj=topo, layoututil_obj=lay, layer_id=i)
                _, ifm = om.get_ifmap_matrix()
                _, flt = om.get_filter_matrix()
                _, ofm = om.get_ofmap_matrix()
                cs = classes[cfg["dataflow"]]()
                if cfg["dataflow"] == "ws":
                    n, m = topo.get_layer_sparsity_ratio(i)
                    cs.set_params(config_obj=conf, ifmap_op_mat=ifm, filter_op_mat=flt, ofmap_op_mat=ofm,
                                  sparsity_ratio_N=n, sparsity_ratio_M=m,
                                  ifmap_op_mat_original=om.ifmap_addr_matrix_original,
                                  sparsity_filter_array=om.sparse_filter_array)
                else:
                    cs.set_params(config_obj=conf, ifmap_op_mat=ifm, filter_op_mat=flt, ofmap_op_mat=ofm)
                ifd, fld, ofd = cs.get_demand_matrices()
                assert ifd.shape[0] == fld.shape[0] == ofd.shape[0]
                memo[key] = {"total_cycles": int(ofd.shape[0]) - 1,
                             "ifmap_sram_reads": int(cs.get_ifmap_requests()),
                             "filter_sram_reads": int(cs.get_filter_requests()),
                             "ofmap_sram_writes": int(cs.get_ofmap_requests())}
        layers.append({"name": entry[0], **memo[key]})
    return {"config": cfg, "seconds": time.perf_counter() - t0, "layers": layers}


def main():
    req = json.load(sys.stdin)
    fn = compute_one if req.get("mode", "full") == "compute" else run_one
    out = [fn(req["rows"], cfg, req["workdir"]) for cfg in req["configs"]]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
