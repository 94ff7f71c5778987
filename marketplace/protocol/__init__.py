"""Wire formats shared by the marketplace's clients and its server: pure data and signatures, no I/O.

The client (``marketplace.client``) and the server's payment gates (``marketplace.payments``) both
import from here; nothing here imports either of them.
"""
