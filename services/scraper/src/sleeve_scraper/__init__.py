"""sleeve_scraper."""
