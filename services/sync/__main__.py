from services.sync.app import MIGRATIONS, create_app
from services.sync.settings import SyncSettings
from shared.runtime import main

settings = SyncSettings()
main(settings, MIGRATIONS, lambda: create_app(settings))
