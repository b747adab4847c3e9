"""A finished long-running operation as the Vertex AI gapic client returns it (for request tests)."""


class Operation:
    def __init__(self, response):
        self.response = response
        self.operation = type("Op", (), {"name": "projects/p/locations/l/operations/1"})()

    def result(self, timeout=None):
        return self.response
