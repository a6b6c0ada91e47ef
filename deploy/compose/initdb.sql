-- Run once by the postgres image on an empty data volume (docker-entrypoint-initdb.d).
-- One database per service: each service owns its tables and no service reads another's.
CREATE DATABASE envelopepay_sync;
CREATE DATABASE envelopepay_envelope;
CREATE DATABASE envelopepay_mailer;
CREATE DATABASE envelopepay_payments;
CREATE DATABASE envelopepay_gateway;
