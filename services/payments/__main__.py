from services.payments.app import MIGRATIONS, create_app
from services.payments.settings import PaymentsSettings
from shared.runtime import main

settings = PaymentsSettings()
main(settings, MIGRATIONS, lambda: create_app(settings))
