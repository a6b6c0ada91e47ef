from services.envelope.app import MIGRATIONS, create_app
from services.envelope.settings import EnvelopeSettings
from shared.runtime import main

settings = EnvelopeSettings()
main(settings, MIGRATIONS, lambda: create_app(settings))
