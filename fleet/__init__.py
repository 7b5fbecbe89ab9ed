"""The platform's small shared kernel: settings, the event contract, clients, CLI, local stack."""

import warnings

# google-api-core warns on every import that Python 3.11 support ends in 2027; not actionable.
warnings.filterwarnings("ignore", category=FutureWarning, module="google.api_core")
