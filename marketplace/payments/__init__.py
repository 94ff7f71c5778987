"""Payments the gateway accepts: per-request x402 payments and payment-channel vouchers."""
