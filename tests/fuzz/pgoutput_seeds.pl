#!/usr/bin/perl
# Turns recorded pgoutput payloads (tests/data/pgoutput/*.hex: one hex payload per line) into
# seeds for pgoutput_fuzz: each payload a 2-byte big-endian length and its bytes. One seed per
# transaction or stream segment; a long one is cut into pieces that each repeat the opening
# message (Begin / Stream Start) and the Relation and Type messages seen so far, so that every
# piece decodes and routes on its own and seeds stay small.
#
#   perl pgoutput_seeds.pl OUT_DIR FILE.hex...
use strict;
use warnings;
use File::Basename;

my $max_changes = 8;
my ($out, @files) = @ARGV;
die "usage: $0 OUT_DIR FILE.hex...\n" unless defined $out && @files;

for my $file (@files) {
  open(my $in, '<', $file) or die "$file: $!\n";
  my $name = basename($file, '.hex');
  my $n = 0;
  my (@seed, @context);
  my $changes = 0;
  my $flush = sub {
    return unless @seed;
    my $path = sprintf('%s/%s_%03d', $out, $name, $n++);
    open(my $fh, '>:raw', $path) or die "$path: $!\n";
    print $fh pack('n', length($_) / 2) . pack('H*', $_) for @seed;
    close($fh);
    @seed = ();
  };
  while (my $line = <$in>) {
    chomp $line;
    next if $line eq '';
    my $type = chr(hex(substr($line, 0, 2)));
    if ($type eq 'B' || $type eq 'S') {    # Begin, Stream Start
      $flush->();
      @seed = @context = ($line);
      $changes = 0;
    } elsif ($type eq 'R' || $type eq 'Y') {    # Relation, Type
      push @seed, $line;
      push @context, $line;
    } elsif ($type eq 'C' || $type eq 'E' || $type eq 'c' || $type eq 'A') {    # ends
      push @seed, $line;
      $flush->();
      @context = ();
    } else {
      push @seed, $line;
      if (++$changes >= $max_changes && @context) {
        $flush->();
        @seed = @context;
        $changes = 0;
      }
    }
  }
  $flush->();
}
