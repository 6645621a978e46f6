"""The graph layer: the network IR and its op registry (:mod:`.ir`), graph passes (:mod:`.passes`) and
execution on the emulated MAC array (:mod:`.runner`). It depends on :mod:`kernels` only; :mod:`quant`,
the frontends, the cost model, the sweep and the CLI build on it."""
