"""The five services; each is its own package and process, importing only `shared`."""
