"""What a user reads stays true: the README runs as written, the package installs, the OpenAPI document generates
a client."""
