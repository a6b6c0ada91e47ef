"""sync: pulls bills and contacts from Clio, keeps the invoice mirror, publishes invoice.*"""
