"""The payment gates on the server: x402 per request, payment channels (gate, voucher ledger, settler), their
limits and attacks."""
