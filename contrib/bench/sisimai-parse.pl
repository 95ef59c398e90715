#!/usr/bin/perl
# sisimai-parse.pl - parse each mail file with Sisimai, for the comparison in
# benches/analysis.rs (`cargo bench --bench analysis`).
#
# Usage: perl contrib/bench/sisimai-parse.pl FILE...
#        perl contrib/bench/sisimai-parse.pl - < list-of-files   (one path a line)
#
# Each file is parsed on its own and exactly one tab-separated line is printed
# for it, so that the parse work cannot be skipped and the caller can count
# what was recognised:
#
#   FILE <TAB> RECORDS <TAB> REASONS <TAB> MESSAGE-IDS <TAB> RECIPIENTS
#
# RECORDS is the number of delivery-status records Sisimai produced (0: the
# file was not recognised as a bounce, feedback report or auto-reply); the
# other columns are comma-separated and de-duplicated, in record order.
#
# Works with Sisimai 4 (Sisimai->make; RFC 3834 auto-replies are always
# parsed there and come out with reason "vacation") and Sisimai 5
# (Sisimai->rise, where auto-replies need vacation => 1). "delivered" records
# (2.x.x status) are included in both, so every record of every DSN counts.
# Install Sisimai 4 on Debian/Ubuntu: apt-get install -y libsisimai-perl
use strict;
use warnings;
use Sisimai;

my $rise = Sisimai->can('rise') ? 1 : 0;    # Sisimai >= 5

my @files = @ARGV;
if (!@files || (@files == 1 && $files[0] eq '-')) {
    @files = ();
    while (my $line = <STDIN>) {
        chomp $line;
        push @files, $line if length $line;
    }
}

binmode STDOUT;
my $exit = 0;
for my $file (@files) {
    unless (-f $file) {
        warn "sisimai-parse.pl: $file: no such file\n";
        $exit = 1;
        next;
    }
    my $records = eval {
        $rise
          ? Sisimai->rise($file, 'delivered' => 1, 'vacation' => 1)
          : Sisimai->make($file, 'delivered' => 1);
    };
    if ($@) {
        # Sisimai died on this file: report it as unrecognised, keep going.
        my $err = $@;
        $err =~ s/\s+/ /g;
        warn "sisimai-parse.pl: $file: $err\n";
        $records = undef;
    }
    $records ||= [];

    my (@reasons, @ids, @rcpts, %seen);
    for my $r (@$records) {
        my $reason = $r->reason // '';
        my $id     = $r->messageid // '';
        my $rcpt   = $r->recipient ? ($r->recipient->address // '') : '';
        push @reasons, $reason if length $reason && !$seen{"r\0$reason"}++;
        push @ids,     $id     if length $id     && !$seen{"m\0$id"}++;
        push @rcpts,   $rcpt   if length $rcpt   && !$seen{"a\0$rcpt"}++;
    }
    print join("\t", $file, scalar(@$records), join(',', @reasons),
        join(',', @ids), join(',', @rcpts)), "\n";
}
exit $exit;
