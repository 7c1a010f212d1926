"""The errors a user can act on. Each message is one full sentence that says what to do next.

The CLI maps them to exit codes: ``CheckFailedError`` → 1, every other ``ReparamError`` → 2.
"""


class ReparamError(Exception):
    """Base of every error repvgg-onnx raises on purpose.

    ``hint`` names the option or value that fixes it (``--input-shape x:1x3x224x224``); the
    message itself names no command-line flag, so API users read it as it is.
    """

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def __reduce__(self):
        """Pickled with every attribute (errors cross from a verification child process)."""
        return (_rebuild, (type(self), str(self), dict(self.__dict__)))


def _rebuild(cls: type[ReparamError], message: str, state: dict) -> ReparamError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class ModelLoadError(ReparamError):
    """The file is missing, unreadable, not an ONNX model, or its external data is unsafe."""


class UnsupportedModelError(ReparamError):
    """The model is valid ONNX but cannot be processed (e.g. exported in training mode)."""


class ModelRunError(UnsupportedModelError):
    """onnxruntime cannot load or run one of the two models; ``role`` says which."""

    def __init__(self, message: str, role: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.role = role


class InputSpecError(ReparamError):
    """An ``--input-shape`` or input description does not fit the model."""


class ModelSaveError(ReparamError):
    """The output could not be written; the output path is left untouched."""


class CheckFailedError(ReparamError):
    """Verification ran and the two models disagree."""

    exit_code = 1


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type if it has none): how an error of a
    library we call is quoted inside one of ours, which must stay one line."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
