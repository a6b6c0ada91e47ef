from services.mailer.app import MIGRATIONS, create_app
from services.mailer.settings import MailerSettings
from shared.runtime import main

settings = MailerSettings()
main(settings, MIGRATIONS, lambda: create_app(settings))
