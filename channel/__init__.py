"""The node: channel parameters, key storage, the runtime, the local API, the client and the CLI."""
