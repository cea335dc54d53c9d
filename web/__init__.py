"""The personal account (личный кабинет): web pages and JSON API."""
