"""Research simulations of value distribution: seeded scenarios of producers, builders and consumers trading on a
local chain, royalty rules compared, metrics, plots and reports.

- ``simulation.scenario``: scenario files (TOML, validated), overrides and sweep grids.
- ``simulation.world``: the harness a run and the demo stand on (chain, contracts, gateway, funded parties with
  their clients, settle / release / withdraw, reconciliation with a run's own ledger).
- ``simulation.engine``: a scenario's economy on a world; returns a typed ``simulation.results.RunResult``.
- ``simulation.metrics``: pure functions over a run's results (Gini, Lorenz, correlations, summary, CSVs).
- ``simulation.plots`` / ``simulation.report``: PNG figures and the Markdown report that embeds them.
"""
