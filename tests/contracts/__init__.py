"""The Solidity contracts on both backends: token, marketplace and vaults, channels, registries, lineage
royalties, invariants."""
